"""What a run's next epoch depends on, built from its config, and its checkpoint's form.

`TrainingState` holds the networks, optimisers, schedules, image pool, data order, random streams and the
epoch reached; its `state_dict()` is the checkpoint written after every epoch, and `load_state_dict()` is how
a run resumes. It also builds the run's stepper (p2p.step) on its networks, optimisers and streams.
"""

from __future__ import annotations

import torch

from p2p import checkpoint, contract, data, losses, runtime, step, streams
from p2p.config import RunConfig, to_dict
from p2p.models import create_discriminator, create_generator
from p2p.models.layers import set_dropout_generator
from p2p.optimizers import make_optimizer, make_schedule, set_optimizer_form
from p2p.step import LossSums


class TrainingState:
    """Everything the next epoch depends on, built from the config in a fixed order (each consumer of
    randomness has its own stream: p2p.streams), and saved after every epoch as a checkpoint of tensors
    and plain values (format 2)."""

    def __init__(self, cfg: RunConfig, device: torch.device, with_data: bool = True, progress: bool = False):
        self.cfg, self.device = cfg, device
        # Data: decoded once; shuffling and jitter, and each trick, draw from their own stream.
        self.loader = data.load_train(cfg.data, cfg.optim.batch_size, seed=streams.stream_seed(cfg.seed, streams.DATA),
                                      progress=progress) if with_data else None
        self.tricks = streams.TrickStreams(cfg.seed, device)
        self.graphed = step.use_cuda_graph(cfg, device)  # the step as one CUDA graph (p2p.step)
        # Models, optimisers, schedules; `*_run` is what runs (compiled or not), the module holds the weights.
        fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.G = create_generator(cfg).to(device, memory_format=fmt)
        self.D = create_discriminator(cfg).to(device, memory_format=fmt) if cfg.loss.gan != "none" else None
        self.G_run = runtime.compile_module(self.G, cfg.runtime, device)
        self.D_run = runtime.compile_module(self.D, cfg.runtime, device) if self.D is not None else None
        self.opt_G = make_optimizer(self.G, cfg, device, capturable=self.graphed)
        self.sched_G = make_schedule(self.opt_G, cfg)
        self.opt_D = make_optimizer(self.D, cfg, device, capturable=self.graphed) if self.D is not None else None
        self.sched_D = make_schedule(self.opt_D, cfg) if self.opt_D is not None else None
        self.pool = losses.ImagePool(cfg.tricks.image_pool)
        self.dropout = streams.generator(cfg.seed, streams.DROPOUT, device)  # G's dropout masks, a stream of its own
        set_dropout_generator(self.G, self.dropout)
        self.sums = LossSums(self.losses, device)
        self.stepper = step.make_stepper(step.StepParts(self.G_run, self.D_run, self.opt_G, self.opt_D,
                                                        step.StepSettings.of(cfg), self.pool, self.dropout,
                                                        self.tricks, self.sums, device), self.graphed)
        self.total_epochs = cfg.optim.total_epochs
        self.epoch = self.saved_epoch = 0  # epochs done; the newest one on disk (what a stop leaves to resume from)
        self.run_id: str | None = None
        self.metrics: dict[str, float] = {}  # the last epoch's

    @property
    def images(self) -> int:
        return len(self.loader.data) if self.loader is not None else 0

    @property
    def losses(self) -> tuple[contract.Loss, ...]:
        """The losses this run logs: D's (and G's adversarial one) only where there is a D."""
        return tuple(loss for loss in contract.LOSSES if self.D is not None or not loss.needs_discriminator)

    def scoring_due(self) -> bool:
        return self.cfg.eval.due(self.epoch, self.total_epochs)

    def scores(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if k.startswith(contract.EVAL_PREFIX)}

    def state_dict(self) -> dict:
        nets = [("generator", self.G), ("opt_G", self.opt_G), ("sched_G", self.sched_G), ("discriminator", self.D),
                ("opt_D", self.opt_D), ("sched_D", self.sched_D)]
        return {"format": checkpoint.FORMAT, "config": to_dict(self.cfg), "run_id": self.run_id, "epoch": self.epoch,
                "finished": self.epoch == self.total_epochs,
                "metrics": {k: float(v) for k, v in self.metrics.items()},  # this epoch's, in case logging them fails
                **{name: part.state_dict() if part is not None else None for name, part in nets},
                "pool": self.pool.state_dict(), "loader": self.loader.state_dict(), "tricks": self.tricks.state_dict(),
                "dropout": self.dropout.get_state(), "rng": runtime.rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.sched_G.load_state_dict(state["sched_G"])
        if self.D is not None:
            self.D.load_state_dict(state["discriminator"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.sched_D.load_state_dict(state["sched_D"])
        self.pool.load_state_dict(state["pool"], self.device)
        if self.loader is not None:
            self.loader.load_state_dict(state["loader"])
        self.tricks.load_state_dict(state["tricks"])
        runtime.set_rng_state(state["rng"])
        # A checkpoint from before dropout had its own generator: G's dropout drew from torch's global one.
        self.dropout.set_state(state["dropout"] if "dropout" in state else runtime.global_rng_state(self.device))
        for opt, sched in ((self.opt_G, self.sched_G), (self.opt_D, self.sched_D)):
            if opt is not None:  # the checkpoint may come from a run of the other form (graphed or eager)
                set_optimizer_form(opt, sched, self.graphed, self.device)
        self.epoch = self.saved_epoch = state["epoch"]
        self.run_id, self.metrics = state["run_id"], dict(state.get("metrics") or {})

    def snapshot(self, metrics: dict[str, float]) -> dict:
        """The checkpoint of the epoch just done, with its metrics, copied off the live tensors (to the CPU): the
        next epoch trains while it is written (`checkpoint.write_checkpoint`)."""
        self.metrics = metrics
        return checkpoint.copied_to_cpu(self.state_dict())

"""The optimisers' form and learning rate: Adam as a run builds it (fused, for-each, or capturable when a CUDA
graph replays the step), the rate's schedule (constant, then a linear decay to 0), and the form a resumed
optimiser is given, whichever form saved it."""

from __future__ import annotations

import torch
import torch.nn as nn

from p2p.config import RunConfig


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """Constant for `epochs`, then linear decay towards 0 over `decay_epochs` (the reference's rule)."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(decay_epochs + 1)


def make_optimizer(net: nn.Module, cfg: RunConfig, device: torch.device, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam. The fused kernel (one launch for all parameters) exists on CPU and CUDA; deterministic mode keeps
    the plain for-each path, whose arithmetic order is fixed. `capturable` (a CUDA graph replays the step): the
    learning rate is a tensor on the device that the schedule fills in place, so nothing is captured again."""
    fused = not cfg.runtime.deterministic
    return torch.optim.Adam(net.parameters(), lr=learning_rate(cfg.optim.lr, capturable, device),
                            betas=(cfg.optim.beta1, cfg.optim.beta2),
                            fused=fused or None, foreach=None if fused else True, capturable=capturable)


def make_schedule(opt: torch.optim.Optimizer, cfg: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_factor` times the config's rate, a number, written into the optimiser each epoch (a capturable
    optimiser's tensor is filled in place, so the CUDA graph reading it needs no recapture)."""
    for group in opt.param_groups:
        group["initial_lr"] = cfg.optim.lr
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg.optim.epochs, cfg.optim.decay_epochs))


def learning_rate(value: float, capturable: bool, device: torch.device) -> float | torch.Tensor:
    """A capturable optimiser's rate is a tensor on the device (the graph reads it; the schedule fills it in
    place), a plain one's a number."""
    return torch.tensor(value, device=device) if capturable else value


def set_optimizer_form(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR, capturable: bool,
                       device: torch.device) -> None:
    """After loading a checkpoint, give the optimiser this run's form, whichever form saved it: capturable or
    plain, its rate recomputed from the schedule (a graphed run's was a float32); the step counts where the
    kernel reads them (the device for fused or capturable Adam, else the host)."""
    for group, base, rule in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["capturable"] = capturable
        group["lr"] = learning_rate(base * rule(sched.last_epoch), capturable, device)
        on_device = capturable or bool(group.get("fused"))
        for p in group["params"]:
            if "step" in opt.state.get(p, {}):
                opt.state[p]["step"] = opt.state[p]["step"].to(device if on_device else torch.device("cpu"), torch.float32)

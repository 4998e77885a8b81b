"""`make bench`'s sweep view: how many training steps one device does per second, all trials together.

A sweep trains many trials; what sets its wall time is the device's aggregate rate, not one step's
time. Trials share a device in two ways, each measured at 1, 2, 4, 8 trials:
- processes: P workers, as `p2p sweep --workers P` starts them (on the CPU each with its share of the
  cores, as the sweep gives them);
- packs: one process stepping K trials in turn, as `p2p sweep --pack K` does (p2p.packing.train_together:
  on CUDA each trial on a stream of its own, so that the GPU overlaps them), with and without the graph.
On the CPU also P processes of K each, which is what `--pack K` does there with the default workers.
Every process warms up (compilation, a graph's capture) and then waits; all start timing together, so
the aggregate is steps in one wall-clock window. The best aggregate gives the projected wall time of the
patch-size sweep (its trials x steps; scoring not included).

Plus real epochs through `p2p.trainer.train` (data loading included): the second of three counts, so that
the first one's warm-up and capture do not, with and without what its checkpoint's write costs the run.

Each measurement runs in fresh processes: `python -m benchmarks.throughput --child KIND ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from benchmarks.steps import ROOT, SETTINGS, VARIANTS, Setting, Step, build_step, synchronizer, variant_overrides, warm_up

COUNTS = (1, 2, 4, 8)
PATCHSIZE = ROOT / "sweeps" / "patchsize.yaml"
FACADES_TRAIN = 400  # training pairs in the facades release: one epoch's steps at batch 1
GPU_VARIANTS = ("p2p bf16 channels_last", "p2p bf16 channels_last graph", "p2p bf16 channels_last compile + graph")
EPOCH_VARIANTS_GPU = ("p2p fp32", *GPU_VARIANTS)
READY_TIMEOUT_S = 900.0  # eight processes compiling their networks at once take minutes


def cpu_variant() -> str:
    """What a CPU-scale sweep runs (its scale sets runtime.precision: auto): bf16 where the CPU has it natively."""
    import torch

    from p2p.runtime import native_bf16

    return "p2p bf16" if native_bf16(torch.device("cpu")) else "p2p fp32"


# ---------------------------------------------------------------- in a measuring process


def child_steps(setting: Setting, variant: str, device: str, threads: int, pack: int, first_seed: int,
                seconds: float, protocol: IO[str]) -> dict:
    """`pack` trials (seeds first_seed, first_seed + 1, ...) stepped in turn in this process, as
    train_together steps them: on CUDA each on a stream of its own when there are several.
    Says `ready` once warm, waits for `go` (every process starts timing together), then steps for `seconds`."""
    import torch

    sync = synchronizer(device)
    cuda = device.startswith("cuda")
    steps: list[tuple[Step, torch.cuda.Stream | None]] = []
    for seed in range(first_seed, first_seed + pack):
        stream = torch.cuda.Stream() if cuda and pack > 1 else None
        step = build_step(setting, variant, device, seed=seed, threads=threads)
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream())  # the step's inputs were made on the default stream
        steps.append((step, stream))

    def one_round() -> None:
        for step, stream in steps:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                step()

    warm_up(one_round, sync, variant, budget_s=seconds)  # a graphed variant: every trial captured
    print("ready", file=protocol, flush=True)
    sys.stdin.readline()
    sync()
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_round()
        rounds += 1
        if cuda and rounds % 8 == 0:
            sync()  # keeps the host a few rounds ahead at most, so the window's end is near its last round
    sync()
    return {"steps": rounds * pack, "seconds": time.perf_counter() - start}


def child_epoch(setting: Setting, variant: str, device: str, data_root: str, images: int) -> dict:
    """Three epochs of `images` facades through p2p.trainer.train: each epoch's img/s over its steps (data loading
    included), and epoch 2 as the run lives it: from epoch 1's checkpoint landing to epoch 2's (each written on
    its thread while the next epoch trains), so the copy off the device, the write's competition and any wait
    for it count. Plus the checkpoint's size and what writing it takes."""
    from p2p import contract
    from p2p.config import load_config
    from p2p.tracking_protocol import NullTracker
    from p2p.trainer import train

    tracker, landed = NullTracker(), {}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = variant_overrides(variant, device) | {
            "data.root": data_root, "data.max_images": images, "optim.epochs": 3, "optim.decay_epochs": 0,
            "eval.every": 0, "eval.metrics": ["l1"], "eval.max_images": 4, "runtime.out_dir": f"{tmp}/runs"}
        train(load_config(ROOT / "experiments" / "facades.yaml", overrides, scale=setting.scale), tracker=tracker,
              run_dir=Path(tmp) / "run", progress=False,
              on_epoch=lambda epoch, metrics: landed.setdefault(epoch, time.perf_counter()))
        saved = checkpoint_write_s(Path(tmp) / "run" / contract.CHECKPOINT_FILE)
    by_epoch = tracker.metrics[contract.IMG_PER_S]
    rates = [by_epoch[e] for e in sorted(by_epoch)]
    return {"images": images, "img_per_s_by_epoch": rates, "img_per_s": rates[1], "checkpoint": saved,
            "img_per_s_with_checkpoint": images / (landed[2] - landed[1])}


def checkpoint_write_s(path: Path, repeats: int = 3) -> dict:
    """The run's last checkpoint written again as its writer thread writes it (from host memory; the median of
    `repeats`), and its size."""
    from p2p import checkpoint

    state, times = checkpoint.load(path), []
    for _ in range(repeats):
        started = time.perf_counter()
        checkpoint.save_atomic(state, path)
        times.append(time.perf_counter() - started)
    return {"write_s": sorted(times)[len(times) // 2], "mb": path.stat().st_size / 1e6}


# ---------------------------------------------------------------- in the driving process


def how(processes: int, pack: int) -> str:
    if pack == 1:
        return "processes"
    return "pack" if processes == 1 else "processes x pack"


def threads_each(processes: int, device: str) -> int:
    """Each process's threads: on the CPU its share of the cores, as `p2p sweep` gives its workers; on a GPU
    a few (the host only launches work), never more than the cores."""
    cores = os.cpu_count() or 1
    return max(1, cores // processes) if device == "cpu" else max(1, min(4, cores // processes))


class _Child:
    """One measuring process: its protocol on stdout, everything else it prints in a file (read on failure)."""

    def __init__(self, args: list[str]):
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "--child", *args], cwd=ROOT,
                                     text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)

    def failure(self) -> RuntimeError:
        self.proc.wait()
        self.log.seek(0)
        lines = self.log.read().strip().splitlines()
        return RuntimeError(lines[-1] if lines else f"exit status {self.proc.returncode}")

    def wait_ready(self, deadline: float) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            if not select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise RuntimeError(f"not ready within {READY_TIMEOUT_S:.0f} s")
            line = stdout.readline()
            if not line:
                raise self.failure()
            if line.strip() == "ready":
                return

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise self.failure()
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure_together(setting: Setting, variant: str, device: str, processes: int, pack: int,
                     seconds: float) -> dict:
    """`processes` processes of `pack` trials each, timed in one window: the steps of all of them per second."""
    threads = threads_each(processes, device)
    children = [_Child(["steps", setting.scale, variant, device, str(threads), str(pack), str(i * pack), str(seconds)])
                for i in range(processes)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in children:
            child.wait_ready(deadline)
        for child in children:
            child.go()
        results = [child.result(timeout=seconds + 300) for child in children]
    finally:
        for child in children:
            child.close()
    return {"how": how(processes, pack), "processes": processes, "pack": pack, "trials": processes * pack,
            "threads_each": threads, "it_per_s": sum(r["steps"] / r["seconds"] for r in results)}


def sweep_jobs(device: str, counts: tuple[int, ...], variants: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(variant, processes, pack) to measure. Each variant: P processes of one trial, then one process of K.
    On the CPU also P processes of K (what `--pack K` gives with the default one worker per core); the CPU
    counts stop at the cores (more only time-slice them). Processes and packs alternate, so that a machine
    growing busier slows both alike."""
    cores = os.cpu_count() or 1
    if device == "cpu":
        counts = tuple(c for c in counts if c <= max(2, cores))
    jobs = []
    for variant in variants:
        for n in counts:
            jobs.append((variant, n, 1))
            if n > 1:
                jobs.append((variant, 1, n))
                if device == "cpu":
                    jobs.append((variant, n, n))
    return jobs


def sweep_view(device: str, seconds: float, counts: tuple[int, ...] = COUNTS, variants: tuple[str, ...] = (),
               progress: bool = True, log: IO[str] | None = None) -> dict:
    """Aggregate it/s of trials together on one device: the paper setting on a GPU (eager, graph,
    compile + graph), the CPU scale on the CPU (what a CPU sweep runs). Each row is also written to `log` as
    it comes, so that a run stopped by a time limit still leaves what it measured."""
    from tqdm import tqdm

    cuda = device == "cuda"
    setting = SETTINGS[0] if cuda else SETTINGS[1]
    variants = variants or (GPU_VARIANTS if cuda else (cpu_variant(),))
    rows = []
    for variant, processes, pack in tqdm(sweep_jobs(device, counts, variants), desc=f"sweep view ({device})",
                                         unit="run", disable=not progress):
        try:
            row = measure_together(setting, variant, device, processes, pack, seconds)
        except Exception as exc:  # one failed configuration (e.g. out of memory) does not lose the others
            row = {"how": how(processes, pack), "processes": processes, "pack": pack, "trials": processes * pack,
                   "error": str(exc)}
        rows.append({"variant": variant} | row)
        if log is not None:
            print(f"sweep view: {json.dumps(rows[-1])}", file=log, flush=True)
    view: dict = {"setting": setting.name, "scale": setting.scale, "device": device, "seconds": seconds, "rows": rows}
    ok = [r for r in rows if "error" not in r]
    if ok:
        view["best"] = max(ok, key=lambda r: r["it_per_s"])
        view["projection"] = project_patchsize(view["best"]["it_per_s"], setting.scale)
    return view


def project_patchsize(it_per_s: float, scale: str, images: int = FACADES_TRAIN) -> dict:
    """The patch-size sweep at `scale`: every trial's epochs x `images` steps (batch 1 at both scales), over
    `it_per_s`; scoring not included."""
    from p2p.sweep.driver import make_plan
    from p2p.sweep.spec import load_spec

    plan = make_plan(load_spec(PATCHSIZE), scale, [])
    epochs = sum(plan.epochs(key.cell) for key in plan.keys)
    batch = next(iter(plan.configs.values())).optim.batch_size
    steps = epochs * -(-images // batch)
    return {"sweep": "patchsize", "scale": scale, "trials": plan.trial_count, "epochs": epochs, "steps": steps,
            "it_per_s": it_per_s, "wall_min": steps / it_per_s / 60}


def measure_epochs(device: str, data_root: str, settings: tuple[Setting, ...] = SETTINGS,
                   images: int | None = None) -> list[dict]:
    """A real epoch per variant: on CUDA all 400 facades at each setting (fp32, bf16 channels_last eager, graph,
    compile + graph); on the CPU 40 images at the CPU scale, as a CPU sweep runs."""
    if device == "cuda":
        jobs = [(s, v, images or FACADES_TRAIN) for s in settings for v in EPOCH_VARIANTS_GPU]
    else:
        jobs = [(SETTINGS[1], cpu_variant(), images or 40)]
    rows = []
    for setting, variant, count in jobs:
        row = {"setting": setting.name, "device": device, "variant": variant}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--child", "epoch", setting.scale,
                               variant, device, data_root, str(count)], cwd=ROOT, capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            rows.append(row | {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
        else:
            rows.append(row | json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------- the report's tables


def format_sweep_view(view: dict) -> list[str]:
    lines = [f"## Sweep view: trials together on one {view['device']} ({view['setting']}, {view['seconds']:g} s "
             "timed each)", "",
             "| how | variant | processes x pack | threads each | it/s, all trials | vs one trial alone |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    alone = {r["variant"]: r["it_per_s"] for r in view["rows"] if r["trials"] == 1 and "error" not in r}
    for r in view["rows"]:
        layout = f"{r['processes']} x {r['pack']}"
        if "error" in r:
            lines.append(f"| {r['how']} | {r['variant']} | {layout} | | error: {r['error']} | |")
            continue
        ratio = f"{r['it_per_s'] / alone[r['variant']]:.2f}x" if r["variant"] in alone else "-"
        lines.append(f"| {r['how']} | {r['variant']} | {layout} | {r['threads_each']} | {r['it_per_s']:.1f} | "
                     f"{ratio} |")
    if view.get("projection"):
        p, best = view["projection"], view["best"]
        lines += ["", f"Best: {best['how']} {best['processes']} x {best['pack']} ({best['variant']}), "
                      f"{best['it_per_s']:.1f} it/s: the {p['scale']}-scale patch-size sweep ({p['trials']} trials, "
                      f"{p['steps']:,} steps) would train in {p['wall_min']:.0f} min (scoring not included)."]
    return lines


def format_epochs(rows: list[dict]) -> list[str]:
    lines = ["## A real epoch through p2p.trainer.train (data loading included; epoch 2 is the one that counts)", "",
             "| setting | device | variant | images | img/s, epoch 1 | img/s, epoch 2 | checkpoint MB "
             "| checkpoint write s | img/s, epoch 2 with its checkpoint |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['device']} | {r['variant']} | | error: {r['error']} | | | | |")
        else:
            rates = " | ".join(f"{x:.1f}" for x in r["img_per_s_by_epoch"][:2])
            saved = r.get("checkpoint")  # reports from before the checkpoint was timed lack it
            tail = (f"{saved['mb']:.0f} | {saved['write_s']:.2f} | {r['img_per_s_with_checkpoint']:.1f}" if saved
                    else "| |")
            lines.append(f"| {r['setting']} | {r['device']} | {r['variant']} | {r['images']} | {rates} | {tail} |")
    lines += ["", "An epoch's img/s counts its steps; a run also writes a checkpoint after every epoch, on a thread of "
                  "its own while the next epoch trains. The last column is epoch 2 as the run lives it, from epoch 1's "
                  "checkpoint landing to epoch 2's (of three epochs); the write's time is that of the last checkpoint "
                  "written again from host memory."]
    return lines


def main(argv: list[str]) -> int:
    protocol, sys.stdout = sys.stdout, sys.stderr  # stdout carries the protocol alone; stray prints go to the log
    kind, scale, variant, device, *rest = argv
    setting = next(s for s in SETTINGS if s.scale == scale)
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}")
    if kind == "steps":
        threads, pack, first_seed, seconds = int(rest[0]), int(rest[1]), int(rest[2]), float(rest[3])
        result = child_steps(setting, variant, device, threads, pack, first_seed, seconds, protocol)
    elif kind == "epoch":
        result = child_epoch(setting, variant, device, rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(result), file=protocol, flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"]:
        raise SystemExit("run by `python -m benchmarks.bench` (make bench)")
    raise SystemExit(main(sys.argv[2:]))

"""`make bench` (`python -m benchmarks.bench`): how fast training and scoring run, against a plain
implementation in the same run. A developer's tool beside the package, not part of it (nor of `make test`).

Each measurement runs in a fresh subprocess (allocator settings are per process), and
baseline and tuned variants alternate so that a busy machine slows both alike. The
baseline is the reference implementation's loop: eager fp32, the same networks, plain
`torch.optim.Adam`, glibc's default allocator, D's weights frozen during G's step.

The data part generates a dataset of aligned JPEG pairs and compares decoding and reading
it held in memory (p2p before memory-mapped splits) with the memory-mapped decoded split:
peak resident memory, decode time, and the loader's time per training batch. Its default
(`--data-pairs 2000`, 286x286, ~1 GB decoded) keeps the bench at minutes; docs/speed.md's
numbers come from `--data-pairs 20000` (~9.8 GB decoded, more than a 2-core CI machine
should hold twice), run alone: `python -m benchmarks.bench --skip train,score,tracking,startup,sweep,epoch
--data-pairs 20000`.

The sweep view (several trials together on one device) and real epochs through `p2p train` are
benchmarks.throughput's; the settings, variants and the step they time are benchmarks.steps'.
On CUDA each step's row also counts its kernels and the GPU's busy share (torch.profiler).

Results go to `reports/bench/bench-<time>.json` (and `latest.json`, `latest.md`).

Longer than the project's ~350 lines a module: it is one command's driver together with the measurements its
subprocesses run (each child re-enters this module by its arguments) and the report they make; what could stand
apart already does (benchmarks.steps, benchmarks.throughput). The data part (`measure_data*`) is the next to go.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.steps import CUDA_ONLY, FACADES, ROOT, SETTINGS, VARIANTS, Setting, Step, build_step, synchronizer, warm_up

# ---------------------------------------------------------------- one measurement (in a subprocess)


def measure_iteration(setting: Setting, variant: str, device_name: str, max_iters: int, budget_s: float) -> dict:
    step, sync = build_step(setting, variant, device_name), synchronizer(device_name)
    warmup = warm_up(step, sync, variant, budget_s)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    device = device_name.split(":")[0]
    result = {"setting": setting.name, "variant": variant, "device": device, "iters": len(times),
              "ms_per_iter": median * 1000, "img_per_s": 1.0 / median, "warmup_s": warmup,
              "spread_ms": [min(times) * 1000, max(times) * 1000]}
    if variant == "baseline":
        result["flops_per_iter"] = count_flops(step)
    if device == "cuda":
        result |= profile_kernels(step, sync)
        # over the step's time measured without the profiler (which slows the host, not the GPU)
        result["gpu_busy_share"] = result["gpu_busy_ms_per_iter"] / result["ms_per_iter"]
    return result


def profile_kernels(step: Step, sync: Step, steps: int = 5) -> dict:
    """CUDA kernels launched per step and the GPU's busy time per step (the kernels' durations added up).
    Over the unprofiled step time this is the share of the step the GPU works: a batch-1 step far below
    100% waits on the host's launches, which is what one CUDA graph per step removes."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA" and not e.name.startswith(("Memcpy", "Memset"))]
    busy_us = sum(e.device_time_total for e in kernels)
    return {"kernels_per_iter": len(kernels) / steps, "gpu_busy_ms_per_iter": busy_us / 1000 / steps}


def count_flops(step: Step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


class TimedTracker:
    """A Tracker (p2p.tracking_protocol) that hands every call to another one and adds up the time the calls take."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    @property
    def run_id(self):
        return self.inner.run_id

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return timed


def measure_tracking_overhead(data_root: str) -> dict:
    """Seconds spent in MLflow calls during a short CPU-scale run, as a share of the run."""
    import tempfile

    from p2p import tracking
    from p2p.config import load_config
    from p2p.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        tracking.ensure_store(uri)
        cfg = load_config(FACADES, {"data.root": data_root, "data.max_images": 100, "optim.epochs": 2,
                                    "optim.decay_epochs": 1, "eval.metrics": ["l1"], "eval.max_images": 8,
                                    "runtime.out_dir": f"{tmp}/runs"}, scale="cpu")
        tracker = TimedTracker(tracking.MlflowTracker(uri))
        t = time.perf_counter()
        train(cfg, tracker=tracker, progress=False)
        total = time.perf_counter() - t
    return {"run_s": total, "tracking_s": tracker.seconds, "tracking_calls": tracker.calls,
            "tracking_share": tracker.seconds / total}


def facades_test(data_root: str, size: int):
    """The facades test split (labels -> photo) at size x size, unjittered: what scoring reads."""
    from p2p.config import DataConfig

    return DataConfig(root=data_root, dataset="facades", direction="BtoA", crop_size=size, load_size=size)


def measure_scoring(data_root: str, size: int) -> list[dict]:
    """Scoring the test split: the batched scorer vs scoring one image at a time."""
    import torch

    from p2p import contract
    from p2p.data import load_eval
    from p2p.metrics import ScoreSettings, score_images
    from p2p.metrics.fcn_fit import scorer_path

    pairs = load_eval(facades_test(data_root, size), "test")
    labels, photos = pairs.split(pairs.pairs)
    # Outputs: the real photos, blurred (a stand-in generator; scoring cost does not depend on content).
    outputs = torch.nn.functional.avg_pool2d(photos.float(), 3, 1, 1).round().to(torch.uint8)
    settings = ScoreSettings(metrics=contract.DEFAULT_METRICS, batch_size=16,
                             fcn_scorer=str(scorer_path("facades", size)))
    score_images(outputs[:2], photos[:2], settings, labels=labels[:2])  # build the networks once
    results = []
    for variant, batch in (("batched", 16), ("one image at a time", 1)):
        t = time.perf_counter()
        scores = score_images(outputs, photos, ScoreSettings(metrics=settings.metrics, batch_size=batch,
                                                             fcn_scorer=settings.fcn_scorer), labels=labels)
        results.append({"variant": variant, "images": len(outputs), "size": size,
                        "seconds": time.perf_counter() - t, "scores": scores})
    return results


# ---------------------------------------------------------------- data larger than memory

DATA_PATHS = {"in memory": False, "memory-mapped": True}  # name -> data.load_pairs(memory_map=...)


def make_pair_dataset(root: Path, pairs: int, size: int, seed: int = 0) -> int:
    """`pairs` aligned A|B JPEGs (each half size x size) in root/bench/train; returns their bytes on disk.

    Smooth colour fields (an upsampled 8x8 grid per half) compress to a few kB, as label maps and photos
    of a release do far more than noise would, so the folder stays small next to the decoded split."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import write_jpeg
    from tqdm import tqdm

    folder = root / "bench" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    total = 0
    for i in tqdm(range(pairs), desc="generate pairs", unit="img", leave=False):
        grid = torch.rand(1, 3, 8, 16, generator=g)
        image = F.interpolate(grid, size=(size, 2 * size), mode="bilinear", align_corners=False)
        path = folder / f"{i + 1}.jpg"
        write_jpeg(image[0].mul(255).round().to(torch.uint8), str(path), quality=90)
        total += path.stat().st_size
    return total


def _rss_mib() -> dict:
    """This process's resident memory now (anonymous and file-backed) and its peak so far, in MiB."""
    import resource

    now = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            now[key] = int(value.split()[0]) / 1024
    return {"rss_mib": now.get("VmRSS"), "anon_mib": now.get("RssAnon"), "file_mib": now.get("RssFile"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_data_config(root: str, size: int):
    from p2p.config import DataConfig

    return DataConfig(root=root, dataset="bench", direction="BtoA", load_size=size,
                      crop_size=round(size * 256 / 286))


def measure_data_decode(root: str, size: int, path_name: str) -> dict:
    """Decoding the generated split (and keeping it in the cache) in a fresh process: time and peak memory."""
    from p2p import data

    cfg = bench_data_config(root, size)
    data.load_pairs(cfg, "train", size, max_images=1, memory_map=DATA_PATHS[path_name])  # codecs loaded, warm
    before = _rss_mib()
    t = time.perf_counter()
    pairs = data.load_pairs(cfg, "train", size, memory_map=DATA_PATHS[path_name])
    seconds = time.perf_counter() - t
    return {"path": path_name, "images": len(pairs), "decode_s": seconds, "before": before, "after": _rss_mib()}


def measure_data_epoch(root: str, size: int, path_name: str, batches: int) -> dict:
    """Reading the cached split and one pass of the training loader over it (batch 1, crop and mirror).

    The loader's time per batch is what the data path adds to a training step (the networks' time is the
    same for both paths); the pass touches every image, so the peak shows what an epoch holds resident."""
    from p2p import data

    cfg = bench_data_config(root, size)
    before = _rss_mib()
    t = time.perf_counter()
    pairs = data.load_pairs(cfg, "train", size, memory_map=DATA_PATHS[path_name])
    load_s = time.perf_counter() - t
    loader = data.TrainLoader(pairs, cfg.crop_size, 1, flip=True, seed=0)
    times: list[float] = []
    t = time.perf_counter()
    for _ in loader.epoch():
        times.append(time.perf_counter() - t)
        if len(times) >= batches:
            break
        t = time.perf_counter()
    return {"path": path_name, "load_s": load_s, "batches": len(times),
            "ms_per_batch": statistics.median(times) * 1000, "mean_ms_per_batch": statistics.fmean(times) * 1000,
            "p99_ms_per_batch": sorted(times)[int(0.99 * (len(times) - 1))] * 1000,
            "before": before, "after": _rss_mib()}


def measure_data(pairs: int, size: int, work_dir: str | None, batches: int) -> dict:
    """The data part: generate the dataset, then per path decode it and read it, each in a fresh process.

    The in-memory path is skipped where the machine's available memory could not hold the split with room
    to spare (it would push other work out, or be killed); everything generated is deleted at the end."""
    import shutil
    import tempfile

    decoded_bytes = pairs * 6 * size * size
    folder = Path(tempfile.mkdtemp(prefix="p2p-bench-data-", dir=work_dir))
    result: dict = {"pairs": pairs, "size": size, "decoded_bytes": decoded_bytes, "paths": []}
    try:
        free = shutil.disk_usage(folder).free
        if free < 1.2 * decoded_bytes + pairs * 60_000:
            return result | {"error": f"{folder}: {free / 2**30:.1f} GiB free, the decoded split needs "
                                      f"{decoded_bytes / 2**30:.1f} GiB"}
        t = time.perf_counter()
        result["jpeg_bytes"] = make_pair_dataset(folder / "data", pairs, size)
        result["generate_s"] = time.perf_counter() - t
        for name in DATA_PATHS:
            result["paths"].append(_measure_data_path(folder, name, size, batches, decoded_bytes))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _measure_data_path(folder: Path, name: str, size: int, batches: int, decoded_bytes: int) -> dict:
    import shutil

    if not DATA_PATHS[name] and _available_bytes() < 1.5 * decoded_bytes:
        return {"path": name, "error": f"skipped: {_available_bytes() / 2**30:.1f} GiB available, holding the split "
                                       f"needs {decoded_bytes / 2**30:.1f} GiB"}
    cache = folder / f"cache-{'mapped' if DATA_PATHS[name] else 'memory'}"
    env = {"P2P_CACHE_DIR": str(cache)}
    root = str(folder / "data")
    hours = 3 * 3600  # 20,000 images on a busy 2-core machine take a while
    decode = run_child(["--child", "data-decode", root, str(size), name], env=env, timeout=hours)
    if "error" in decode:
        return {"path": name, "error": decode["error"]}
    epoch = run_child(["--child", "data-epoch", root, str(size), name, str(batches)], env=env, timeout=hours)
    shutil.rmtree(cache, ignore_errors=True)  # one decoded split on disk at a time
    return {"path": name, "decode": decode, "epoch": epoch}


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- the driver


def run_child(args: list[str], env: dict | None = None, timeout: float = 900) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_sweep_startup(spec: str, data_root: str, timeout: float = 900) -> dict:
    """Wall time from `p2p sweep SPEC --scale cpu` to its first training step.

    A new sweep (fresh Optuna and MLflow stores) using the project's cache, as a user's sweep
    does once the FCN scorer is fitted: the scorer must be there, or this would time a fit.
    The sweep is watched from outside: its first checkpoint (an epoch without scoring,
    `eval.every=0`) appears at start-up + the epoch's training; the epoch's own measure of its
    training (its images over `train/img_per_s`) is taken off, and one step's share added back.
    """
    import tempfile

    from p2p import checkpoint, contract, data
    from p2p.cache import cache_root
    from p2p.metrics.fcn_fit import scorer_path

    cache = cache_root().resolve()
    if not scorer_path("facades", 128, str(cache)).is_file():
        return {"spec": spec, "startup_s": None, "error": "no FCN scorer for 128x128 yet (make fcn SCALE=cpu)"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "P2P_DATA_ROOT": data_root, "P2P_CACHE_DIR": str(cache),
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        cmd = [sys.executable, "-m", "p2p", "sweep", str(Path(spec).resolve()), "--scale", "cpu", "--workers", "1",
               "--storage", f"sqlite:///{tmp}/optuna.db", "--set", f"runtime.out_dir={tmp}/runs", "--set",
               "eval.every=0", "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp,
                                start_new_session=True)
        elapsed, error = None, None
        try:
            while elapsed is None and error is None:
                found = list(Path(tmp, "runs").glob(f"sweeps/*/cpu/*/seed*/{contract.CHECKPOINT_FILE}"))
                if found:
                    seen = time.perf_counter() - start
                    state = checkpoint.load(found[0])
                    train = data.list_images(Path(data_root) / state["config"]["data"]["dataset"] / "train")
                    images = min(len(train), state["config"]["data"]["max_images"] or len(train))
                    steps = -(-images // int(state["config"]["optim"]["batch_size"]))
                    epoch_s = images / state["metrics"][contract.IMG_PER_S]
                    elapsed = seen - epoch_s + epoch_s / steps
                elif proc.poll() is not None:
                    error = f"the sweep ended (exit status {proc.returncode}) before its first checkpoint"
                elif time.perf_counter() - start > timeout:
                    error = f"no checkpoint within {timeout:.0f} s"
                else:
                    time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"spec": spec, "startup_s": elapsed, **({"error": error} if error else {})}


def flop_per_cycle(flags: set[str], amd_256bit_fma: bool = False) -> int:
    """fp32 FLOP per cycle per core: two FMA pipes x lanes x 2 (multiply and add).

    AVX-512 doubles the lanes (16) only where the FMA units are 512 bits wide: AMD up to Zen 4
    (family 25) runs AVX-512 on 256-bit units, so it peaks like AVX2 (8 lanes).
    """
    if "avx512f" in flags and not amd_256bit_fma:
        return 64
    return 32 if {"avx2", "fma"} <= flags else 8


def matmul_flops(n: int = 2048, rounds: int = 5) -> float:
    """fp32 FLOP/s of an n x n matmul on the CPU, the best of `rounds`."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mhz = re.findall(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo)
    flag_line = re.search(r"flags\s*:\s*(.*)", cpuinfo)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    info["cpu"] = model.group(1).strip() if model else platform.processor()
    info["cpu_mhz"] = max(float(m) for m in mhz) if mhz else None
    family = re.search(r"cpu family\s*:\s*(\d+)", cpuinfo)
    amd_256bit_fma = "AuthenticAMD" in cpuinfo and family is not None and int(family.group(1)) <= 25
    info["flop_per_cycle"] = flop_per_cycle(flags, amd_256bit_fma)
    if info["cpu_mhz"]:
        info["nominal_peak_flops"] = info["threads"] * info["cpu_mhz"] * 1e6 * info["flop_per_cycle"]
    # The reported clock is often the base clock of a boosting (or virtualised) CPU: a large fp32
    # matmul shows what the cores really reach, and the peak is whichever is higher.
    info["matmul_flops"] = matmul_flops()
    info["peak_flops"] = max(info.get("nominal_peak_flops") or 0.0, info["matmul_flops"])
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=15, help="timed iterations per variant (at most)")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per variant (at least 3 iterations)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of baseline and tuned variants")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names")
    parser.add_argument("--settings", default="paper,cpu", help="which settings: paper, cpu")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: " + ", ".join(PARTS))
    parser.add_argument("--devices", default="auto", help="comma-separated: cpu, cuda (auto: the CPU, and CUDA if present)")
    parser.add_argument("--sweep-seconds", type=float, default=20.0, help="sweep view: seconds timed per configuration")
    parser.add_argument("--sweep-counts", default="1,2,4,8",
                        help="sweep view: trial counts (processes, packs); on the CPU at most its cores")
    parser.add_argument("--sweep-variants", default="", help="sweep view: comma-separated variants (default: GPU: "
                        "bf16 channels_last eager, graph, compile + graph; CPU: what a CPU sweep runs)")
    parser.add_argument("--epoch-images", type=int, default=0,
                        help="real epochs: training images (default: 400 on CUDA, 40 on the CPU)")
    parser.add_argument("--data-pairs", type=int, default=2000,
                        help="pairs in the generated dataset of the data part (docs/speed.md's numbers: 20000)")
    parser.add_argument("--data-size", type=int, default=286, help="side of each half of a generated pair (286)")
    parser.add_argument("--data-batches", type=int, default=20000, help="loader batches timed per path (at most)")
    parser.add_argument("--data-dir", default=None,
                        help="where the data part generates and decodes its dataset (default: the temp folder)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data_root = os.environ.get("P2P_DATA_ROOT", str(ROOT / "datasets"))

    if args.child:  # one measurement, printed as JSON on the last line
        kind = args.child[0]
        if kind == "iter":
            setting = next(s for s in SETTINGS if s.scale == args.child[1])
            result = measure_iteration(setting, args.child[2], args.child[3], args.iters, args.budget)
        elif kind == "tracking":
            result = measure_tracking_overhead(data_root)
        elif kind == "score":
            result = {"scoring": measure_scoring(data_root, int(args.child[1]))}
        elif kind == "data-decode":
            result = measure_data_decode(args.child[1], int(args.child[2]), args.child[3])
        elif kind == "data-epoch":
            result = measure_data_epoch(args.child[1], int(args.child[2]), args.child[3], int(args.child[4]))
        else:
            raise SystemExit(f"unknown child {kind}")
        print(json.dumps(result))
        return 0

    from tqdm import tqdm

    skip = set(filter(None, args.skip.split(",")))
    if unknown := skip - set(PARTS):
        parser.error(f"--skip: unknown parts {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    report = {"machine": machine(), "settings": {"iters": args.iters, "budget_s": args.budget,
                                                 "repeats": args.repeats}, "train": [], "scoring": []}
    devices = (["cpu"] + (["cuda"] if "gpu" in report["machine"] else []) if args.devices == "auto"
               else args.devices.split(","))
    variants = [v for v in args.variants.split(",") if v in VARIANTS]
    settings = [s for s in SETTINGS if s.scale in args.settings.split(",")]
    jobs = train_jobs(devices, settings, variants, args.repeats)
    if "train" not in skip:
        raw: dict[tuple, list[dict]] = {}
        for setting, variant, device in tqdm(jobs, desc="bench", unit="run"):
            if _far_slower(raw, setting.name, variant, device):
                continue  # one round shows it; repeating a 25x slower variant only costs minutes
            result = run_child(["--iters", str(args.iters), "--budget", str(args.budget), "--child", "iter",
                                setting.scale, variant, device])
            raw.setdefault((setting.name, variant, device), []).append(result)
        for (setting, variant, device), results in raw.items():
            ok = [r for r in results if "error" not in r]
            if not ok:
                report["train"].append({"setting": setting, "variant": variant, "device": device,
                                        "error": results[0]["error"]})
                continue
            best = min(ok, key=lambda r: r["ms_per_iter"])  # the least disturbed round
            report["train"].append(best | {"rounds_ms": [round(r["ms_per_iter"], 1) for r in ok]})
        add_ratios(report)
    if "score" not in skip:
        from p2p.metrics.fcn_fit import ensure_fcn_scorer

        ensure_fcn_scorer(facades_test(data_root, 256), 256)  # fitted once (~15-55 min) if not cached yet
        scoring = run_child(["--child", "score", "256"])
        report["scoring"] = scoring.get("scoring", [])
        if "error" in scoring:
            report["scoring_error"] = scoring["error"]
    if "tracking" not in skip:
        report["tracking"] = run_child(["--child", "tracking"])
    if "startup" not in skip:
        report["startup"] = measure_sweep_startup(str(ROOT / "sweeps" / "patchsize.yaml"), data_root)
    if "data" not in skip:
        report["data"] = measure_data(args.data_pairs, args.data_size, args.data_dir, args.data_batches)
    if "sweep" not in skip or "epoch" not in skip:
        from benchmarks import throughput  # the sweep view's module (it imports benchmarks.steps, never this one)

        if "sweep" not in skip:
            counts = tuple(int(c) for c in args.sweep_counts.split(","))
            chosen = tuple(v for v in args.sweep_variants.split(",") if v in VARIANTS)
            report["sweep_view"] = [throughput.sweep_view(d, args.sweep_seconds, counts, chosen, log=sys.stdout)
                                    for d in devices]
        if "epoch" not in skip:
            report["epochs"] = [row for d in devices for row in throughput.measure_epochs(
                d, data_root, tuple(settings), args.epoch_images or None)]
    write_report(report, Path(args.out))
    return 0


PARTS = ("train", "score", "tracking", "startup", "data", "sweep", "epoch")


def train_jobs(devices: list[str], settings: list[Setting], variants: list[str], repeats: int) -> list[tuple]:
    """(setting, variant, device) in the order measured: rounds of every variant in turn, so that baseline and
    tuned alternate; the CUDA-only variants (a graph, the GPU's bf16 + channels_last) on CUDA alone."""
    return [(s, v, d) for d in devices for s in settings for _ in range(repeats) for v in variants
            if d == "cuda" or v not in CUDA_ONLY]


def _far_slower(raw: dict[tuple, list[dict]], setting: str, variant: str, device: str, factor: float = 5.0) -> bool:
    """Whether an earlier round already measured this variant at over `factor` x the baseline's time."""
    base = [r["ms_per_iter"] for r in raw.get((setting, "baseline", device), []) if "error" not in r]
    mine = [r["ms_per_iter"] for r in raw.get((setting, variant, device), []) if "error" not in r]
    return variant != "baseline" and bool(base and mine) and min(mine) > factor * min(base)


def add_ratios(report: dict) -> None:
    peak = report["machine"].get("peak_flops")
    for row in report["train"]:
        base = next((r for r in report["train"] if r["setting"] == row["setting"] and r["device"] == row["device"]
                     and r["variant"] == "baseline" and "error" not in r), None)
        if base is None or "error" in row:
            continue
        row["speedup_vs_baseline"] = base["ms_per_iter"] / row["ms_per_iter"]
        flops = base.get("flops_per_iter")
        if flops:
            row["flops_per_iter"] = flops
            row["achieved_flops"] = flops / (row["ms_per_iter"] / 1000)
            if peak and row["device"] == "cpu":
                row["peak_fraction"] = row["achieved_flops"] / peak


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(report, indent=2)
    (out / f"bench-{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    table = format_table(report)
    (out / "latest.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out / f'bench-{stamp}.json'}")


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"# p2p bench ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"machine: {m['cpu']}, {m['threads']} threads, {m['cpu_capability']}"
             + (f", peak {m['peak_flops'] / 1e9:.0f} GFLOP/s fp32" if m.get("peak_flops") else "")
             + (f" (clock x FLOP/cycle {m['nominal_peak_flops'] / 1e9:.0f}, fp32 matmul {m['matmul_flops'] / 1e9:.0f})"
                if m.get("nominal_peak_flops") and m.get("matmul_flops") else "")
             + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; torch {m['torch']}, Python {m['python']}", ""]
    if report["train"]:
        lines += format_train(report["train"])
    if report.get("scoring"):
        lines += ["", "## Scoring the facades test split (FCN, LPIPS, SSIM, PSNR, L1)", "",
                  "| variant | images | size | seconds | vs one at a time |", "| --- | ---: | ---: | ---: | ---: |"]
        single = next((s["seconds"] for s in report["scoring"] if s["variant"] == "one image at a time"), None)
        for s in report["scoring"]:
            ratio = f"{single / s['seconds']:.2f}x" if single else "-"
            lines.append(f"| {s['variant']} | {s['images']} | {s['size']} | {s['seconds']:.1f} | {ratio} |")
    if report.get("scoring_error"):
        lines += ["", f"Scoring: not measured ({report['scoring_error']})"]
    if report.get("tracking") and "error" not in report["tracking"]:
        t = report["tracking"]
        lines += ["", f"MLflow logging: {t['tracking_s']:.2f} s of a {t['run_s']:.1f} s run "
                      f"({100 * t['tracking_share']:.2f}%, {t['tracking_calls']} calls)."]
    if report.get("startup"):
        s = report["startup"]
        lines += ["", "Sweep start-up (command to first training step, CPU scale): "
                      + (f"{s['startup_s']:.1f} s" if s.get("startup_s") else f"not measured ({s.get('error')})")]
    if report.get("data"):
        lines += ["", *format_data(report["data"])]
    if report.get("sweep_view") or report.get("epochs"):
        from benchmarks import throughput

        for view in report.get("sweep_view", []):
            lines += ["", *throughput.format_sweep_view(view)]
        if report.get("epochs"):
            lines += ["", *throughput.format_epochs(report["epochs"])]
    return "\n".join(lines)


def format_train(rows: list[dict]) -> list[str]:
    """One row per (setting, device, variant). Where CUDA was measured, two more columns: kernels launched
    per step, and the share of the step the GPU is busy (low: the step waits on the host's launches)."""
    cuda = any("kernels_per_iter" in r for r in rows)
    lines = ["## Training iteration (G and D steps, batch 1)", "",
             "| setting | device | variant | ms/iter | img/s | vs baseline | GFLOP/s | of peak | rounds (ms) |"
             + (" kernels/iter | GPU busy |" if cuda else ""),
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |" + (" ---: | ---: |" if cuda else "")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['device']} | {r['variant']} | error: {r['error']} | | | | | |"
                         + (" | |" if cuda else ""))
            continue
        ratio = f"{r['speedup_vs_baseline']:.2f}x" if "speedup_vs_baseline" in r else "-"
        flops = f"{r['achieved_flops'] / 1e9:.1f}" if "achieved_flops" in r else "-"
        peak = f"{100 * r['peak_fraction']:.1f}%" if "peak_fraction" in r else "-"
        line = (f"| {r['setting']} | {r['device']} | {r['variant']} | {r['ms_per_iter']:.1f} | {r['img_per_s']:.2f} | "
                f"{ratio} | {flops} | {peak} | {r['rounds_ms']} |")
        if cuda:
            line += (f" {r['kernels_per_iter']:.0f} | {100 * r['gpu_busy_share']:.0f}% |" if "kernels_per_iter" in r
                     else " - | - |")
        lines.append(line)
    if any(r.get("flops_per_iter") for r in rows):
        lines += ["", "FLOPs per iteration counted with torch.utils.flop_counter on the baseline step; "
                      "'of peak' is over the fp32 peak, which bf16 can pass (AVX-512 BF16 and AMX run it faster)."]
    if cuda:
        lines += ["", "kernels/iter: CUDA kernels per step (torch.profiler, 5 steps); GPU busy: their summed "
                      "durations over the step's time measured without the profiler."]
    return lines


def format_data(d: dict) -> list[str]:
    """The data part's table: per path, decode time and peak memory, then reading the split and an epoch."""
    size = d["size"]
    lines = [f"## Data larger than memory ({d['pairs']} pairs at {size}x{size}, {d['decoded_bytes'] / 2**30:.2f} GiB "
             f"decoded" + (f", {d['jpeg_bytes'] / 2**20:.0f} MiB of JPEGs" if d.get("jpeg_bytes") else "") + ")", ""]
    if d.get("error"):
        return lines + [f"not measured ({d['error']})"]
    lines += ["| path | decode s | decode: RSS before / peak MiB | load s | epoch: RSS before / peak MiB "
              "| RSS after the epoch MiB (anon + file) | loader ms/batch (median / mean / p99) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in d["paths"]:
        if "error" in p or "error" in p.get("epoch", {}):
            lines.append(f"| {p['path']} | {p.get('error') or p['epoch']['error']} | | | | | |")
            continue
        dec, ep = p["decode"], p["epoch"]
        after = ep["after"]
        lines.append(f"| {p['path']} | {dec['decode_s']:.1f} | {dec['before']['rss_mib']:.0f} / "
                     f"{dec['after']['peak_rss_mib']:.0f} | {ep['load_s']:.2f} | {ep['before']['rss_mib']:.0f} / "
                     f"{after['peak_rss_mib']:.0f} | {after['rss_mib']:.0f} ({after['anon_mib']:.0f} + "
                     f"{after['file_mib']:.0f}) | {ep['ms_per_batch']:.2f} / {ep['mean_ms_per_batch']:.2f} / "
                     f"{ep['p99_ms_per_batch']:.2f} |")
    lines += ["", "RSS is the whole process (Python, torch and torchvision before any image: the 'before' column); "
                  "the peak is getrusage's ru_maxrss. The loader's time is crop, mirror and conversion to float "
                  "at batch 1 over one epoch (at most --data-batches), what the data path adds to a step."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

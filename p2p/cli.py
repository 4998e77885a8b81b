"""`p2p` command line: one subcommand per job, each a thin shell over a module (the report's over `analysis`).

Options several commands take are defined once (`_shared_options`), and every command ends through
`run`: user errors (bad config, missing folder, unreachable store, ...) print one line on stderr and
exit 2; SIGINT and SIGTERM end a command through its cleanup (a run is marked KILLED, its checkpoint
kept) and exit 128 + the signal's number.

Each handler imports the module it shells over inside its body, on purpose: `p2p --help`, `p2p describe
--list-models` and a mistyped command answer in half a second, without importing torch, MLflow or optuna.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.command import add_report_arguments, report
from p2p import contract
from p2p.command import Parser, run
from p2p.contract import Tag
from p2p.errors import UserError


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Options several commands take, each defined once (argparse parents)."""
    options = {name: argparse.ArgumentParser(add_help=False) for name in ("set", "scale", "progress", "json")}
    options["set"].add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                                help="override a config key (dotted), the value read as YAML; repeatable")
    options["scale"].add_argument("--scale", default=None,
                                  help="scale overlay: cpu, paper, or a YAML file (experiments/scales/)")
    options["progress"].add_argument("--no-progress", action="store_true", help="no progress bars")
    options["json"].add_argument("--json", action="store_true", help="print JSON")
    return options


def build_parser() -> argparse.ArgumentParser:
    from p2p.sweep import rounds  # light (no torch, no optuna): its default goes into --help

    parser = Parser(prog="p2p", description="pix2pix ablation lab")
    sub = parser.add_subparsers(dest="command", required=True)
    opt = _shared_options()
    config, run_options = [opt["set"], opt["scale"]], [opt["set"], opt["progress"]]

    p = sub.add_parser("train", help="train one tracked run", parents=[*config, opt["progress"]])
    p.add_argument("config", help="run config YAML (e.g. experiments/facades.yaml)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue an unfinished run: its folder or checkpoint, or (no value) the newest one of this config")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("describe", help="what a config builds: parameters, receptive field, output sizes "
                       "(--list-models: the registered networks)", parents=[*config, opt["json"]])
    p.add_argument("config", nargs="?", help="run config YAML (not needed with --list-models)")
    p.add_argument("--list-models", action="store_true",
                   help="list the registered generators and discriminators (p2p.models.registry) and exit")
    p.set_defaults(handler=cmd_describe)

    p = sub.add_parser("translate", help="apply a trained generator to a folder of images")
    p.add_argument("checkpoint", help="generator.pt or checkpoint.pt of a run")
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.set_defaults(handler=cmd_translate)

    p = sub.add_parser("eval", help="score a trained generator on a split and log the scores to its run (--set may "
                       "change eval.*, runtime.* and data.root keys)", parents=[*run_options, opt["json"]])
    p.add_argument("target", metavar="RUN_ID_OR_CHECKPOINT", help="an MLflow run id, or generator.pt / checkpoint.pt")
    p.add_argument("--split", default=None, help="split to score (default: the run's eval.split, test)")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("score", help="score two folders of images paired by file name (LPIPS, SSIM, PSNR, L1, FCN)",
                       parents=[opt["progress"], opt["json"]])
    p.add_argument("outputs_dir")
    p.add_argument("targets_dir")
    p.add_argument("--labels", default=None, metavar="LABELS_DIR",
                   help="label maps the outputs were made from (same names and size): adds the FCN scores")
    p.add_argument("--dataset", default="facades", help="whose palette and FCN scorer --labels uses (default facades)")
    p.add_argument("--fcn-scorer", default=None, metavar="FILE", help="a fitted FCN scorer file instead of the cached one")
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help="comma-separated scores (default lpips,ssim,psnr,l1, and fcn with --labels); add kid,fid for "
                        "the distribution scores (Inception-v3 features; slow on a CPU)")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser("sweep", help="run or resume a sweep (an ablation) from a spec in sweeps/ (--set: in every "
                       "trial)", parents=run_options)
    p.add_argument("spec", help="sweep spec YAML (e.g. sweeps/patchsize.yaml)")
    p.add_argument("--scale", default="auto", help="cpu, paper, or a YAML overlay (default: paper where CUDA is "
                   "present, else cpu)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes on this machine (default: --per-gpu per GPU, else one per CPU core)")
    p.add_argument("--per-gpu", default="auto", metavar="N",
                   help="with --workers auto on CUDA: worker processes per GPU (default auto: AUTO_PER_GPU in "
                        "p2p/sweep/driver.py; docs/speed.md, Status)")
    p.add_argument("--pack", default="auto", metavar="K",
                   help="trials each worker process trains together, each exactly as alone (default auto: "
                        "AUTO_PACK in p2p/sweep/driver.py, 1 on the CPU where packing does not pay; docs/speed.md, "
                        "Status)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage shared by all workers (default: $P2P_SWEEP_STORAGE, else sqlite:///optuna.db; "
                        "postgresql://... for many machines)")
    p.add_argument("--name", default=None, help="run the spec under another sweep name (a new study and experiment)")
    p.add_argument("--dry-run", action="store_true", help="print the cells x seeds and an estimate of the time; run nothing")
    p.add_argument("--until-resolved", action="store_true",
                   help="run seeds in rounds until every claim is reproduced, reversed or negligible (anytime-valid "
                        "verdicts); each round gives seeds only to the cells of open claims")
    p.add_argument("--max-seeds", type=int, default=None, metavar="N",
                   help=f"with --until-resolved: at most N seeds per cell (default {rounds.DEFAULT_MAX_SEEDS})")
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="with --until-resolved: start no round that would end past this much wall time "
                        "(e.g. 150m, 2.5h, 900s)")
    p.add_argument("--retry-failed", action="store_true", help="queue the trials that failed (NaN, bad config) again")
    p.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="worker heartbeat; a trial silent for 3 heartbeats is re-run (default 10)")
    p.add_argument("--status", action="store_true",
                   help="print where the sweep stands (per cell: done, running, failed, queued; the running trials' "
                        "heartbeats), read from its study whatever started the workers; runs nothing")
    slurm = p.add_argument_group("Slurm (docs/sweeps.md, \"Run on a Slurm cluster\")")
    slurm.add_argument("--slurm", action="store_true",
                       help="submit the workers to Slurm as one job array (submitit) and return; with --dry-run, print "
                            "the sbatch script instead")
    slurm.add_argument("--tasks", type=int, default=0, metavar="N",
                       help="array tasks (default: one per trial left, or per --pack of them)")
    slurm.add_argument("--partition", default=None, metavar="P", help="the Slurm partition")
    slurm.add_argument("--gpus-per-task", type=int, default=0, metavar="G",
                       help="GPUs per task; each runs --per-gpu workers per GPU (default 0: CPU workers, one per task)")
    slurm.add_argument("--cpus-per-task", type=int, default=1, metavar="C",
                       help="CPUs per task, shared among its workers as threads (default 1)")
    slurm.add_argument("--time", default="4h", metavar="T",
                       help="time limit per task: 90m, 4h, or Slurm's D-HH:MM:SS (default 4h); the workers save and "
                            "put their trials back 2 minutes before it")
    slurm.add_argument("--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
                       help="another sbatch option, e.g. account=lab or qos=normal; repeatable")
    slurm.add_argument("--shared-root", dest="shared_roots", action="append", default=[], metavar="PATH",
                       help="a folder every node mounts, besides the one this command runs in: runtime.out_dir, the "
                            "FCN scorer cache and a journal storage must lie under one; repeatable")
    slurm.add_argument("--wait", action="store_true", help="after submitting, follow the trials until the array ends")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a process started by the sweep
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("report", help="write a sweep's report: scores, findings, figures (what `make report` calls)")
    add_report_arguments(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("fcn", help="the FCN-score's segmenter")
    fcn = p.add_subparsers(dest="fcn_command", required=True)
    p = fcn.add_parser("fit", help="fine-tune and cache the FCN scorer for a dataset and resolution (--scale cpu: "
                       "128x128, paper: 256x256)", parents=[*config, opt["progress"]])
    p.add_argument("config", nargs="?", default="experiments/facades.yaml",
                   help="run config naming the dataset and resolution (default experiments/facades.yaml)")
    p.add_argument("--size", type=int, default=None, help="resolution (default: the config's data.crop_size)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: see docs/scores.md, The FCN scorer)")
    p.add_argument("--force", action="store_true", help="fit again even if the scorer is cached")
    p.set_defaults(handler=cmd_fcn_fit)

    p = sub.add_parser("data", help="download a public pix2pix dataset release (what `make data` calls)")
    p.add_argument("name", metavar="NAME", help="facades, cityscapes, maps, edges2shoes, edges2handbags or night2day")
    p.add_argument("dest", nargs="?", default="datasets", metavar="DEST",
                   help="folder that gets DEST/NAME (default ./datasets, where configs look without P2P_DATA_ROOT)")
    p.add_argument("--url", default=None, help="another copy of the archive (a mirror, or file:///path/NAME.tar.gz)")
    p.set_defaults(handler=cmd_data)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from p2p import tracking
    from p2p.config import load_config
    from p2p.resume import find_resumable  # lazy, as the trainer below: torch only for the commands that train
    from p2p.trainer import train

    cfg = load_config(args.config, args.overrides, scale=args.scale)
    tracking.check_store()  # a store that does not answer stops here, before any data is read or any step runs
    run_dir = None
    if args.resume == "latest":
        run_dir = find_resumable(Path(cfg.runtime.out_dir), cfg.name)
        if run_dir is None:
            raise UserError(f"--resume: no unfinished run of '{cfg.name}' under {cfg.runtime.out_dir}/{cfg.name}")
    elif args.resume:
        path = Path(args.resume)
        run_dir = path.parent if path.is_file() else path
        if not (run_dir / contract.CHECKPOINT_FILE).is_file():
            raise UserError(f"--resume {args.resume}: no {contract.CHECKPOINT_FILE} there")
    result = train(cfg, tracker=tracking.MlflowTracker(), run_dir=run_dir, resume=run_dir is not None,
                   progress=not args.no_progress, tags={Tag.SCALE: args.scale or contract.CUSTOM_SCALE})
    print(f"run {result.run_id} finished: {result.run_dir}")
    for key, value in sorted(result.scores.items()):
        print(f"  {key:20s} {value:.4f}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    if args.list_models:
        from p2p.describe import format_model_list, model_list

        print(json.dumps(model_list(), indent=2) if args.json else format_model_list())
        return 0
    if args.config is None:
        raise UserError("p2p describe needs a run config (e.g. experiments/facades.yaml), or --list-models")
    from p2p.config import load_config
    from p2p.describe import describe, format_description

    info = describe(load_config(args.config, args.overrides, scale=args.scale))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from p2p.translate import translate_folder

    written = translate_folder(args.checkpoint, args.input_dir, args.output_dir)
    print(f"wrote {len(written)} images to {args.output_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from p2p.evaluate import evaluate_saved, format_scores

    scores, run_id = evaluate_saved(args.target, args.split, args.overrides, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"run_id": run_id, "scores": scores}, indent=2))
    else:
        print(f"logged to run {run_id}" if run_id else "not logged (the checkpoint's run is not in the tracking store)")
        print(format_scores(scores))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from p2p.evaluate import format_scores
    from p2p.metrics.distribution import fid_warning
    from p2p.metrics.folders import parse_metrics, score_folders

    metrics = parse_metrics(args.metrics, args.labels is not None)
    scores, count = score_folders(args.outputs_dir, args.targets_dir, args.labels, dataset=args.dataset,
                                  fcn_scorer=args.fcn_scorer, progress=not args.no_progress, metrics=metrics)
    warnings = [w for w in [fid_warning(count)] if w and contract.FID.key in scores]
    if args.json:
        print(json.dumps({"images": count, "scores": scores, **({"warnings": warnings} if warnings else {})},
                         indent=2))
    else:
        print(f"{count} image pairs")
        print(format_scores(scores))
        for warning in warnings:
            print(f"warning: {warning}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.heartbeat < 1:
        raise UserError(f"--heartbeat {args.heartbeat}: expected seconds >= 1")
    pack = 0 if args.pack == "auto" else int(args.pack) if args.pack.isdigit() and int(args.pack) >= 1 else None
    if pack is None:
        raise UserError(f"--pack {args.pack}: expected a count of trials >= 1, or auto")
    per_gpu = 0 if args.per_gpu == "auto" else int(args.per_gpu) if args.per_gpu.isdigit() and int(args.per_gpu) >= 1 \
        else None
    if per_gpu is None:
        raise UserError(f"--per-gpu {args.per_gpu}: expected a count of worker processes >= 1, or auto")
    if args.worker:
        from p2p.sweep.worker import worker_main

        return worker_main(args.spec, args.scale, args.storage, args.overrides, args.name, args.heartbeat, args.threads,
                           not args.no_progress, max(1, pack))
    from analysis.findings import read_findings  # the CLI is the one floor that reaches both p2p and analysis
    from p2p.sweep.driver import SweepOptions, run_sweep
    from p2p.sweep.rounds import DEFAULT_MAX_SEEDS, Rounds, parse_duration, run_until_resolved

    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: expected a count >= 1 (or 0 for one per GPU or CPU core)")
    options = SweepOptions(scale=args.scale, workers=args.workers, pack=pack, per_gpu=per_gpu, storage=args.storage,
                           overrides=tuple(args.overrides),
                           name=args.name, retry_failed=args.retry_failed, heartbeat_s=args.heartbeat,
                           progress=not args.no_progress)
    if args.status:
        from p2p.sweep.status import sweep_status

        return sweep_status(args.spec, options)
    if args.slurm:
        return _sweep_on_slurm(args, options)
    for dest, (flag, default) in SLURM_FLAGS.items():
        if getattr(args, dest) != default:
            raise UserError(f"{flag}: only with --slurm")
    if not args.until_resolved:
        for flag, value in (("--max-seeds", args.max_seeds), ("--budget", args.budget)):
            if value is not None:
                raise UserError(f"{flag}: only with --until-resolved")
        return run_sweep(args.spec, options, dry_run=args.dry_run, findings=read_findings)
    if args.max_seeds is not None and args.max_seeds < 2:
        raise UserError(f"--max-seeds {args.max_seeds}: expected a count of seeds >= 2")
    rounds = Rounds(max_seeds=args.max_seeds or DEFAULT_MAX_SEEDS,
                    budget_s=parse_duration(args.budget, "--budget") if args.budget is not None else None)
    return run_until_resolved(args.spec, options, rounds, read_findings, dry_run=args.dry_run)


# The options that mean something only with --slurm: their flag and default.
SLURM_FLAGS = {"tasks": ("--tasks", 0), "partition": ("--partition", None), "gpus_per_task": ("--gpus-per-task", 0),
               "cpus_per_task": ("--cpus-per-task", 1), "time": ("--time", "4h"),
               "slurm_options": ("--slurm-option", []), "shared_roots": ("--shared-root", []), "wait": ("--wait", False)}


def _sweep_on_slurm(args: argparse.Namespace, options) -> int:
    from p2p.sweep.slurm import SlurmOptions, run_slurm

    for flag, value in (("--until-resolved", args.until_resolved), ("--workers", args.workers)):
        if value:
            raise UserError(f"{flag}: not with --slurm (--tasks sets how many workers run)")
    slurm = SlurmOptions(tasks=args.tasks, partition=args.partition, gpus_per_task=args.gpus_per_task,
                         cpus_per_task=args.cpus_per_task, time=args.time, options=tuple(args.slurm_options),
                         shared_roots=tuple(args.shared_roots), wait=args.wait)
    return run_slurm(args.spec, options, slurm, dry_run=args.dry_run)


def cmd_report(args: argparse.Namespace) -> int:
    return report(args)


def cmd_data(args: argparse.Namespace) -> int:
    from p2p.download import download

    download(args.name, Path(args.dest), args.url)
    return 0


def cmd_fcn_fit(args: argparse.Namespace) -> int:
    import dataclasses

    from p2p.config import load_config
    from p2p.metrics.fcn import load_scorer
    from p2p.metrics.fcn_fit import FitSettings, file_lock, fit_scorer, format_fit, scorer_path

    cfg = load_config(args.config, args.overrides, scale=args.scale)
    size = args.size or cfg.data.crop_size
    path = scorer_path(cfg.data.dataset, size, cfg.eval.cache_dir)
    if path.is_file() and not args.force:
        print(f"already fitted (use --force to fit again): {path}")
        print(format_fit(load_scorer(path).info))
        return 0
    settings = FitSettings()
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs {args.epochs}: expected an integer >= 1")
        settings = dataclasses.replace(settings, epochs=args.epochs)
    with file_lock(path):
        info = fit_scorer(cfg.data, size, path, settings, weights_dir=cfg.eval.weights_dir,
                          progress=not args.no_progress, device=cfg.runtime.device)
    print(f"fitted: {path}")
    print(format_fit(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a sweep's worker says nothing when stopped: the sweep command speaks for it
    return run(lambda: args.handler(args), quiet_stop=getattr(args, "worker", False))


if __name__ == "__main__":
    raise SystemExit(main())

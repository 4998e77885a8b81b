"""`p2p` command line: one subcommand per job, each a thin shell over a module.

User errors (bad config, missing folder, ...) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from p2p.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2p", description="pix2pix ablation lab")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one tracked run")
    p.add_argument("config", help="run config YAML (e.g. experiments/facades.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted), value read as YAML; repeatable")
    p.add_argument("--scale", default=None, help="scale overlay: cpu, paper, or a YAML file (experiments/scales/)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue an unfinished run: its folder or checkpoint, or (no value) the newest one of this config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("describe", help="what a config builds: parameters, receptive field, output sizes")
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--scale", default=None, help="scale overlay: cpu, paper, or a YAML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_describe)

    p = sub.add_parser("translate", help="apply a trained generator to a folder of images")
    p.add_argument("checkpoint", help="generator.pt or checkpoint.pt of a run")
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.set_defaults(handler=cmd_translate)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from p2p.config import load_config
    from p2p.trainer import find_resumable, train

    cfg = load_config(args.config, args.overrides, scale=args.scale)
    run_dir = None
    if args.resume == "latest":
        run_dir = find_resumable(Path(cfg.runtime.out_dir), cfg.name)
        if run_dir is None:
            raise UserError(f"--resume: no unfinished run of '{cfg.name}' under {cfg.runtime.out_dir}/{cfg.name}")
    elif args.resume:
        path = Path(args.resume)
        run_dir = path.parent if path.is_file() else path
        if not (run_dir / "checkpoint.pt").is_file():
            raise UserError(f"--resume {args.resume}: no checkpoint.pt there")
    result = train(cfg, run_dir=run_dir, resume=run_dir is not None, progress=not args.no_progress,
                   tags={"p2p.scale": args.scale or "custom"})
    print(f"run {result.run_id} finished: {result.run_dir}")
    for key, value in sorted(result.scores.items()):
        print(f"  {key:20s} {value:.4f}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"p2p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("p2p: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from p2p.trainer import TrainingFault

        if isinstance(exc, TrainingFault):
            print(f"p2p: training stopped: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())

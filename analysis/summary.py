"""`python -m analysis.summary results/cpu`: every sweep's findings in one Markdown table.

Reads results/cpu/*/findings.json (written by `python -m analysis SWEEP --out results/cpu`) and
prints one row per claim, then the verdicts counted: what docs/findings.md (and the README's short
"What the lab found") is made from.
The verdict reads the anytime-valid interval; the 95% column is the fixed-n t-interval, descriptive.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.findings import fixed_verdict
from analysis.sequential import tally
from p2p import contract
from p2p.command import Parser, run
from p2p.errors import UserError

COLUMNS = ["sweep", "claim", "verdict", "fixed protocol (spec's seeds)",
           "difference [fixed-n 95%]", "anytime-valid interval", "seeds", "seeds for 80% power",
           "holds from epoch", "sign verdict (seeds)", "seeds that misbehave, shape"]


def _number(x, digits: int) -> str:
    return "-" if x is None else f"{x:+.{digits}f}" if digits else str(x)


def row(sweep: str, claim: dict, flags: list[dict] = ()) -> list[str]:
    digits = contract.digits(claim["metric"])
    mean, low, high = claim["mean_difference"], claim["low"], claim["high"]
    if mean is None:
        difference = "-"
    elif low is None:
        difference = _number(mean, digits)
    else:
        difference = f"{mean:+.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    method = {"paired": "paired", "welch": "Welch", "none": "no test"}[claim["method"]]
    seeds = f"{claim['seeds']} ({method})" if claim["method"] == "paired" else \
        f"{claim['seeds_better']} vs {claim['seeds_worse']} ({method})"
    need = claim["seeds_needed"]
    power = f"{need['observed']} / {need['smallest_effect']} (for {need['smallest_effect_size']:g})"
    return [sweep, claim["claim"], verdict(claim), fixed(claim), difference, anytime(claim, digits), seeds, power,
            held(claim), signs(claim), checks(claim, flags)]


def signs(claim: dict) -> str:
    """The sign verdict and its counts: 'reproduced (11 up, 3 down, 0 tied)'; '-' in a findings.json without it."""
    test = claim.get("sign_test")
    if not test:
        return "-"
    return f"{test['verdict']} ({test['above']} up, {test['below']} down, {test['ties']} tied)"


def checks(claim: dict, flags: list[dict]) -> str:
    """What to look at before trusting the mean verdict: the seed it hangs on, flagged seeds of its two cells on its
    score, a failed shape check; 'none' when all is quiet, '-' in a findings.json without these checks."""
    if "leave_one_out" not in claim:
        return "-"
    notes = [f"hangs on seed {x['seed']} ({x['verdict']} without it)" for x in claim["leave_one_out"]]
    notes += [f"{f['cell']} seed {f['seed']} flagged ({f['side']} side)" for f in flags
              if f["metric"] == claim["metric"] and f["cell"] in (claim["better"], claim["worse"])]
    shape = claim.get("shape") or {}
    if shape.get("fails"):
        notes.append(f"not Gaussian-looking (skew {shape['skew']:+.1f}, Shapiro p {shape['shapiro_p']:.2g})")
    return "; ".join(notes) or "none"


def verdict(claim: dict) -> str:
    """The sequential verdict; a findings.json from before them (no anytime-valid interval) has none."""
    return claim["verdict"] if "anytime_valid" in claim else "- (fixed-n only)"


def fixed(claim: dict) -> str:
    """What the fixed protocol (paired t-test, Holm over the sweep's claims, p < 0.05) said at the spec's seeds:
    recorded where seeds were added, else the fixed-n test at the seeds at hand (the spec's)."""
    look = claim.get("fixed_protocol")
    if look is None:
        p = claim.get("p_holm")
        if "anytime_valid" not in claim:  # an older findings.json: its verdict was the fixed protocol's
            return claim["verdict"] + ("" if p is None else f" (Holm p {p:.2g})")
        mean = claim["mean_difference"]
        if p is None or mean is None:
            return "-"
        sign = -1 if contract.lower_is_better(claim["metric"]) else 1
        return f"{fixed_verdict(mean, p, sign, stated=claim.get('stated', True))} (Holm p {p:.2g})"
    p = look["p_holm"]
    return look["verdict"] + ("" if p is None else f" (Holm p {p:.2g})")


def anytime(claim: dict, digits: int) -> str:
    """The interval the verdict read: '[low, high] (alpha 0.0125)', 'unbounded (...)', or '-' (none, or an older file)."""
    interval = claim.get("anytime_valid")
    if not interval or claim["method"] != "paired":
        return "-"
    level = f"alpha {interval['alpha']:.3g}"
    if not interval["bounded"]:
        return f"unbounded ({level}; needs {interval['min_seeds']} seeds)"
    return f"[{interval['low']:.{digits}f}, {interval['high']:.{digits}f}] ({level})"


def held(claim: dict) -> str:
    """The epoch from which the claim holds; else 'reversed from N', 'never' (naming sign flips), or '-'."""
    if claim.get("holds_from_epoch") is not None:
        return str(claim["holds_from_epoch"])
    if claim.get("reversed_from_epoch") is not None:
        return f"reversed from {claim['reversed_from_epoch']}"
    over = claim.get("over_training") or ""
    if not over.startswith(("never", "does not hold")):
        return "-"  # no scores over training, or too few common seeds
    flips = ", ".join(f"{a}-{b}" for a, b in claim.get("sign_flips", []))
    return f"never (sign flips {flips})" if flips else "never"


def summary(folder: Path) -> str:
    """The Markdown table over folder/*/findings.json, sweeps in name order, claims in their order."""
    files = sorted(Path(folder).glob("*/findings.json"))
    if not files:
        raise UserError(f"{folder}: no */findings.json here (write them with: p2p report SWEEP "
                        f"--out {folder})")
    rows, verdicts, fixed_only = [], [], 0
    for path in files:
        try:
            data = json.loads(path.read_text())
            rows += [row(data["sweep"], claim, data.get("flagged_seeds", [])) for claim in data["claims"]]
            verdicts += [claim["verdict"] for claim in data["claims"] if "anytime_valid" in claim]
            fixed_only += sum("anytime_valid" not in claim for claim in data["claims"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a findings.json of this version ({type(exc).__name__}: {exc})") from None
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    lines += ["", f"Sequential verdicts: {tally(verdicts)}." if verdicts else "Sequential verdicts: none yet."]
    if fixed_only:
        lines.append(f"Judged by the earlier fixed protocol only (findings.json from before the sequential verdicts): "
                     f"{fixed_only} claim{'s' if fixed_only != 1 else ''}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m analysis.summary",
                    description="one Markdown table of the findings of every sweep in a folder")
    parser.add_argument("folder", help="a folder of <sweep>/findings.json, e.g. results/cpu")
    args = parser.parse_args(argv)
    return run(lambda: _print(summary(Path(args.folder))))


def _print(text: str) -> int:
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

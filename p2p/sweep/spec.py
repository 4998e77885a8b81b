"""Sweep specs: YAML -> a validated `SweepSpec`, and the run config of each trial.

A spec names a base run config, the cells of one factor (values of one dotted key, or
named variants each a set of overrides), the seeds, per-scale settings and the objective;
or, instead of cells, an Optuna `search` over some keys. Nothing here imports torch or
optuna, so reading and checking a spec (and `--dry-run`'s table) is instant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from p2p.config import RunConfig, load_config, load_yaml, parse_override, replace
from p2p.errors import UserError

# Scores a sweep can optimise, and which way is better (`eval.metrics` entry that produces each).
OBJECTIVES = {
    "eval/fcn_pixel_acc": ("fcn", "maximize"), "eval/fcn_class_acc": ("fcn", "maximize"),
    "eval/fcn_iou": ("fcn", "maximize"), "eval/lpips": ("lpips", "minimize"), "eval/ssim": ("ssim", "maximize"),
    "eval/psnr": ("psnr", "maximize"), "eval/l1": ("l1", "minimize"),
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


@dataclass(frozen=True)
class Cell:
    """One level of the factor: a readable name (the `p2p.cell` tag) and the overrides that make it."""

    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class ScaleSettings:
    seeds: Optional[tuple[int, ...]] = None  # None: the spec's seeds
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchParam:
    key: str  # dotted config key
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    integer: bool = False
    choices: Optional[tuple[Any, ...]] = None


@dataclass(frozen=True)
class Search:
    params: tuple[SearchParam, ...]
    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    startup_trials: int = 4  # trials sampled at random (and never pruned) before TPE and pruning start
    warmup_epochs: int = 1  # epochs a trial runs before it can be pruned


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    base: Path
    description: str
    factor_key: Optional[str]  # set when the cells are values of one key
    cells: tuple[Cell, ...]  # empty for a search
    seeds: tuple[int, ...]
    objective: str
    direction: str  # maximize | minimize
    scales: dict[str, ScaleSettings]
    search: Optional[Search] = None

    @property
    def kind(self) -> str:
        return "search" if self.search is not None else "grid"

    def seeds_for(self, scale: str) -> tuple[int, ...]:
        settings = self.scales.get(scale)
        return settings.seeds if settings is not None and settings.seeds is not None else self.seeds

    def scale_overrides(self, scale: str) -> dict[str, Any]:
        settings = self.scales.get(scale)
        return dict(settings.overrides) if settings is not None else {}

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise UserError(f"{self.path}: no cell named {name!r} (cells: {', '.join(c.name for c in self.cells)})")

    def factor_keys(self) -> set[str]:
        keys = {k for cell in self.cells for k in cell.overrides}
        if self.search is not None:
            keys |= {p.key for p in self.search.params}
        return keys


@dataclass(frozen=True)
class SweepJob:
    """What every process of one sweep agrees on (the sweep command and its workers)."""

    spec: SweepSpec
    scale: str
    storage_url: str
    overrides: tuple[str, ...] = ()
    heartbeat_s: int = 10
    threads: int = 0  # runtime.threads for each run whose config leaves it at 0
    progress: bool = True


@dataclass(frozen=True)
class TrialKey:
    """What one grid trial runs: a cell and a seed."""

    cell: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.cell} seed{self.seed}"


def grid(spec: SweepSpec, scale: str) -> list[TrialKey]:
    """Every (cell, seed), seed-major: a sweep cut short has all cells at its first seeds."""
    return [TrialKey(cell.name, seed) for seed in spec.seeds_for(scale) for cell in spec.cells]


def run_dir(out_dir: str | Path, sweep: str, scale: str, cell: str, seed: int) -> Path:
    """Deterministic per (sweep, scale, cell, seed): a re-run trial finds its checkpoint here."""
    return Path(out_dir) / "sweeps" / sweep / scale / cell.replace(os.sep, "__") / f"seed{seed}"


def trial_config(spec: SweepSpec, scale: str, cell_overrides: dict[str, Any], seed: int,
                 cli_overrides: list[str] | None = None, threads: int = 0) -> RunConfig:
    """base <- scales/<scale>.yaml <- the spec's per-scale settings <- the cell <- seed <- --set.

    `threads` (when > 0) fills in `runtime.threads` unless a layer set it: each of N workers
    on a CPU gets its share of the cores.
    """
    overrides: dict[str, Any] = {**spec.scale_overrides(scale), **cell_overrides, "seed": seed}
    overrides.update(parse_override(o) for o in cli_overrides or [])
    cfg = load_config(spec.base, overrides, scale=scale)
    if threads and cfg.runtime.threads == 0:
        cfg = replace(cfg, {"runtime.threads": threads}, source=str(spec.path))
    return cfg


def check_cli_overrides(spec: SweepSpec, cli_overrides: list[str]) -> None:
    """`--set` may tune anything but the factor itself (that would make every cell the same)."""
    factor = spec.factor_keys()
    for text in cli_overrides:
        key, _ = parse_override(text)
        if key in factor:
            raise UserError(f"--set {text}: '{key}' is what this sweep varies ({spec.path}); "
                            "change the cells in the spec instead")


# ---------------------------------------------------------------- loading and checking


SPEC_KEYS = ("name", "description", "base", "factor", "cells", "seeds", "objective", "scales", "search")


def load_spec(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep spec; every mistake is a UserError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep spec not found (the specs are in sweeps/)")
    data = load_yaml(path)
    src = str(path)

    def bad(key: str, expected: str, got: Any) -> UserError:
        return UserError(f"{src}: key '{key}' expected {expected}, got {got!r}")

    for key in data:
        if key not in SPEC_KEYS:
            raise UserError(f"{src}: unknown key '{key}' (expected one of: {', '.join(sorted(SPEC_KEYS))})")
    sweep_name = name or data.get("name", path.stem)
    if not isinstance(sweep_name, str) or not sweep_name or any(c in sweep_name for c in "/\\ "):
        raise bad("name", "a name without spaces or slashes", sweep_name)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise bad("description", "text", description)

    base = data.get("base")
    if not isinstance(base, str):
        raise bad("base", "the path of a run config (relative to the spec)", base)
    base_path = (path.parent / base).resolve()
    if not base_path.is_file():
        raise UserError(f"{src}: key 'base': no run config at {base_path}")

    factor = data.get("factor", {})
    if not isinstance(factor, dict):
        raise bad("factor", "a mapping with description (and key, cell_name for a list of values)", factor)
    for key in factor:
        if key not in ("description", "key", "cell_name"):
            raise UserError(f"{src}: unknown key 'factor.{key}' (expected one of: cell_name, description, key)")
    description = description or factor.get("description", "")

    if ("cells" in data) == ("search" in data):
        raise UserError(f"{src}: expected either 'cells' (a grid over one factor) or 'search' (an Optuna search)")
    cells: tuple[Cell, ...] = ()
    search = None
    if "cells" in data:
        cells = _cells(data["cells"], factor, src)
    else:
        search = _search(data["search"], src)
        if "key" in factor or "cell_name" in factor:
            raise UserError(f"{src}: key 'factor.key' applies to a list of cells, not to a search")

    seeds = _seeds(data.get("seeds", 1), "seeds", src)
    objective = data.get("objective")
    if not isinstance(objective, dict) or not isinstance(objective.get("metric"), str):
        raise bad("objective", "a mapping with metric (e.g. eval/fcn_iou) and optionally direction", objective)
    for key in objective:
        if key not in ("metric", "direction"):
            raise UserError(f"{src}: unknown key 'objective.{key}' (expected one of: direction, metric)")
    metric = objective["metric"]
    if metric not in OBJECTIVES:
        raise bad("objective.metric", "one of " + ", ".join(OBJECTIVES), metric)
    direction = objective.get("direction", OBJECTIVES[metric][1])
    if direction not in ("maximize", "minimize"):
        raise bad("objective.direction", "maximize or minimize", direction)

    scales_data = data.get("scales", {}) or {}
    if not isinstance(scales_data, dict):
        raise bad("scales", "a mapping of scale name (cpu, paper) to settings", scales_data)
    scales = {str(k): _scale(v, f"scales.{k}", src) for k, v in scales_data.items()}
    if search is not None:
        for where, value in [("seeds", seeds)] + [(f"scales.{k}.seeds", s.seeds) for k, s in scales.items()]:
            if value is not None and len(value) != 1:
                raise bad(where, "one seed for a search (each trial trains one run)", list(value))

    return SweepSpec(name=sweep_name, path=path, base=base_path, description=description,
                     factor_key=factor.get("key"), cells=cells, seeds=seeds, objective=metric, direction=direction,
                     scales=scales, search=search)


def _cells(raw: Any, factor: dict, src: str) -> tuple[Cell, ...]:
    key = factor.get("key")
    template = factor.get("cell_name", "{value}")
    if isinstance(raw, list):
        if not isinstance(key, str) or not key:
            raise UserError(f"{src}: key 'factor.key' is needed for a list of cell values (the dotted key they set)")
        if not isinstance(template, str) or "{value" not in template:
            raise UserError(f"{src}: key 'factor.cell_name' expected a name template such as '{{value}}x{{value}}', "
                            f"got {template!r}")
        cells = [Cell(template.format(value=v), {key: v}) for v in raw]
    elif isinstance(raw, dict):
        if key is not None:
            raise UserError(f"{src}: key 'factor.key' applies to a list of values; named cells carry their own keys")
        cells = []
        for name, overrides in raw.items():
            if overrides is None:
                overrides = {}
            if not isinstance(overrides, dict):
                raise UserError(f"{src}: key 'cells.{name}' expected a mapping of config keys, got {overrides!r}")
            cells.append(Cell(str(name), _dotted(overrides)))
    else:
        raise UserError(f"{src}: key 'cells' expected a list of values (with factor.key) or a mapping of "
                        f"named cells to overrides, got {raw!r}")
    if not cells:
        raise UserError(f"{src}: key 'cells' expected at least one cell")
    names = [c.name for c in cells]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{src}: key 'cells' names the cell {name!r} twice")
        if not name or name.startswith(".") or "\\" in name or ".." in name.split("/"):
            raise UserError(f"{src}: key 'cells' expected readable cell names, got {name!r}")
    return tuple(cells)


def _dotted(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested or dotted overrides -> dotted keys (no config key holds a mapping)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _seeds(raw: Any, where: str, src: str) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return tuple(range(raw))
    if (isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw)
            and len(set(raw)) == len(raw)):
        return tuple(raw)
    raise UserError(f"{src}: key '{where}' expected a count >= 1 or a list of distinct seeds >= 0, got {raw!r}")


def _scale(raw: Any, where: str, src: str) -> ScaleSettings:
    if raw is None:
        return ScaleSettings()
    if not isinstance(raw, dict):
        raise UserError(f"{src}: key '{where}' expected a mapping with seeds and/or set, got {raw!r}")
    for key in raw:
        if key not in ("seeds", "set"):
            raise UserError(f"{src}: unknown key '{where}.{key}' (expected one of: seeds, set)")
    seeds = _seeds(raw["seeds"], f"{where}.seeds", src) if "seeds" in raw else None
    overrides = raw.get("set", {}) or {}
    if not isinstance(overrides, dict):
        raise UserError(f"{src}: key '{where}.set' expected a mapping of config keys, got {overrides!r}")
    return ScaleSettings(seeds=seeds, overrides=_dotted(overrides))


SEARCH_KEYS = ("params", "trials", "sampler", "pruner", "startup_trials", "warmup_epochs")


def _search(raw: Any, src: str) -> Search:
    if not isinstance(raw, dict):
        raise UserError(f"{src}: key 'search' expected a mapping with params and trials, got {raw!r}")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise UserError(f"{src}: unknown key 'search.{key}' (expected one of: {', '.join(SEARCH_KEYS)})")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise UserError(f"{src}: key 'search.params' expected a mapping of config keys to ranges, got {params_raw!r}")
    params = tuple(_search_param(k, v, src) for k, v in params_raw.items())
    trials = raw.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"{src}: key 'search.trials' expected an integer >= 1, got {trials!r}")
    sampler, pruner = raw.get("sampler", "tpe"), raw.get("pruner", "median")
    if sampler not in SAMPLERS:
        raise UserError(f"{src}: key 'search.sampler' expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if pruner not in PRUNERS:
        raise UserError(f"{src}: key 'search.pruner' expected one of {', '.join(PRUNERS)}, got {pruner!r}")
    counts = {}
    for key in ("startup_trials", "warmup_epochs"):
        value = raw.get(key, Search.__dataclass_fields__[key].default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"{src}: key 'search.{key}' expected an integer >= 0, got {value!r}")
        counts[key] = value
    return Search(params=params, trials=trials, sampler=sampler, pruner=pruner, **counts)


def _search_param(key: str, raw: Any, src: str) -> SearchParam:
    where = f"search.params.{key}"
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{src}: key '{where}' expected {{low, high[, log, int]}} or {{choices: [...]}}, got {raw!r}")
    for k in raw:
        if k not in ("low", "high", "log", "int", "choices"):
            raise UserError(f"{src}: unknown key '{where}.{k}' (expected one of: choices, high, int, log, low)")
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices or len(raw) > 1:
            raise UserError(f"{src}: key '{where}.choices' expected a non-empty list (and no range), got {choices!r}")
        return SearchParam(key=key, choices=tuple(choices))
    low, high = _number(raw.get("low")), _number(raw.get("high"))
    if low is None or high is None or not low < high:
        raise UserError(f"{src}: key '{where}' expected numbers low < high, got {raw.get('low')!r}, {raw.get('high')!r}")
    log, integer = raw.get("log", False), raw.get("int", False)
    if not isinstance(log, bool) or not isinstance(integer, bool):
        raise UserError(f"{src}: key '{where}' expected log and int to be true or false")
    if log and low <= 0:
        raise UserError(f"{src}: key '{where}.low' expected a number > 0 for a log range, got {low!r}")
    return SearchParam(key=key, low=low, high=high, log=log, integer=integer)


def _number(value: Any) -> float | None:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

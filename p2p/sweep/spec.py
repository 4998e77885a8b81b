"""Sweep specs: YAML -> a validated `SweepSpec`, and the run config of each trial.

A spec names a base run config, the cells of one factor (values of one dotted key, or
named variants each a set of overrides), the seeds, per-scale settings and the objective;
or, instead of cells, an Optuna `search` over some keys. It is read by the schema engine of
run configs (`p2p.schema`), and nothing here imports torch or optuna, so reading and checking
a spec costs no torch start-up (`--dry-run` then times real training steps: p2p.sweep.estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

from p2p import contract
from p2p.config import RunConfig, load_config, load_yaml, parse_override, with_worker_threads
from p2p.errors import UserError
from p2p.names import NAME, check_name, check_tag, inside, is_name, tag_folder
from p2p.schema import Invalid, build, entry, flatten


@dataclass(frozen=True)
class Cell:
    """One level of the factor: a readable name (its runs' cell tag) and the overrides that make it."""

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


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How an Optuna search runs, as a spec's `search:` writes it (declared once: the file's schema and `Search`)."""

    trials: int = entry(ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = entry(4, ge=0)  # trials sampled at random (and never pruned) before TPE and pruning start
    warmup_epochs: int = entry(1, ge=0)  # epochs a trial runs before it can be pruned


@dataclass(frozen=True, kw_only=True)
class Search(SearchSettings):
    """An Optuna search: its settings and the keys it searches, each checked."""

    params: tuple[SearchParam, ...]




@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    base: Path
    description: str
    cells: tuple[Cell, ...]  # empty for a search
    seeds: tuple[int, ...]
    objective: str
    direction: str  # maximize | minimize
    scales: dict[str, ScaleSettings]
    search: Optional[Search] = None
    claims: tuple[StatedClaim, ...] = ()  # the spec's own hypotheses (`claims:`), judged like the paper's

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
    pack: int = 1  # trials each worker trains together in its process (p2p.trainer.train_together)


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
    """Deterministic per (sweep, scale, cell, seed): a re-run trial finds its checkpoint here, inside
    `<out_dir>/sweeps/<sweep>` (a cell's `/` is `__` in its folder: `unet/L1` -> `unet__L1`)."""
    where = f"sweep {sweep}"
    sweep_dir = Path(out_dir) / "sweeps" / check_name(sweep, "name", where)
    folder = scale_dir(sweep_dir, scale, where) / tag_folder(check_tag(cell, "cells", where)) / f"seed{seed}"
    return inside(sweep_dir, folder, "cells", where)


# a scale is a folder of the sweep's runs: an overlay named by an absolute path, or one climbing out with '..', would
# put them outside <out_dir>/sweeps/<sweep>
SCALE = "cpu, paper, or the relative path of an overlay that does not climb out with '..'"


def scale_dir(sweep_dir: Path, scale: str, source: str) -> Path:
    """A sweep's folder for one scale: `cpu`, `paper`, or an overlay's path (relative, kept inside the sweep's folder)."""
    return inside(sweep_dir, sweep_dir / scale, "--scale", source, SCALE)


def trial_config(spec: SweepSpec, scale: str, cell_overrides: dict[str, Any], seed: int,
                 cli_overrides: list[str] | None = None, threads: int = 0) -> RunConfig:
    """base <- scales/<scale>.yaml <- the spec's per-scale settings <- the cell <- seed <- --set.

    `threads` (when > 0) fills in `runtime.threads` unless a layer set it: each of N workers
    on a CPU gets its share of the cores.
    """
    overrides: dict[str, Any] = {**spec.scale_overrides(scale), **cell_overrides, "seed": seed}
    overrides.update(parse_override(o) for o in cli_overrides or [])
    cfg = load_config(spec.base, overrides, scale=scale)
    scale_dir(Path(cfg.runtime.out_dir) / "sweeps" / spec.name, scale, str(spec.path))  # before any trial writes there
    return with_worker_threads(cfg, threads, source=str(spec.path))


def check_cli_overrides(spec: SweepSpec, cli_overrides: list[str]) -> None:
    """`--set` may tune anything but the factor itself (that would make every cell the same)."""
    factor = spec.factor_keys()
    for text in cli_overrides:
        key, _ = parse_override(text)
        if key in factor:
            raise UserError(f"--set {text}: '{key}' is what this sweep varies ({spec.path}); "
                            "change the cells in the spec instead")


# ---------------------------------------------------------------- the spec file's schema

MAX_SEEDS = 1000  # a count beyond this is a typo, and would build millions of trials
SEEDS = f"a count >= 1 or a list of distinct seeds >= 0 (at most {MAX_SEEDS} seeds)"


def _valid_seeds(raw: Any) -> bool:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return 1 <= raw <= MAX_SEEDS
    return (isinstance(raw, list) and 0 < len(raw) <= MAX_SEEDS and len(set(raw)) == len(raw)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw))


def _seed_tuple(raw: int | list[int]) -> tuple[int, ...]:
    return tuple(range(raw)) if isinstance(raw, int) else tuple(raw)


SWEEP_NAME = NAME.removesuffix(")") + "; no spaces)"  # a folder under <out_dir>/sweeps, and the MLflow experiment


def _sweep_name(name: Any) -> bool:
    return is_name(name) and " " not in name


@dataclass(frozen=True)
class FactorFile:
    description: str = ""
    key: Optional[str] = None  # cells as values of this dotted key ...
    cell_name: str = "{value}"  # ... named by this template


@dataclass(frozen=True)
class ObjectiveFile:
    metric: str = entry(check=lambda m: m in contract.OBJECTIVES, expected="one of " + ", ".join(contract.OBJECTIVES))
    direction: Optional[Literal["maximize", "minimize"]] = None  # None: the score's own


@dataclass(frozen=True)
class StatedClaim:
    """A hypothesis a spec states before its runs: '`better` scores better than `worse`' on the objective; read as
    written (its cells are checked against the spec's by `_claims`)."""

    better: str = entry(expected="the name of a cell of this spec")
    worse: str = entry(expected="the name of a cell of this spec")
    why: str = ""


@dataclass(frozen=True)
class ScaleFile:
    seeds: Any = entry(None, check=_valid_seeds, expected=SEEDS)
    overrides: Optional[dict[str, Any]] = entry(None, alias="set", expected="a mapping of config keys")


@dataclass(frozen=True)
class SearchParamFile:
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    integer: bool = entry(False, alias="int")
    choices: Optional[list[Any]] = None

    def check(self) -> None:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise Invalid("choices", "a non-empty list (and no range)", self.choices)
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise Invalid("", "numbers low < high", shown=f"{self.low!r}, {self.high!r}")
        if self.log and self.low <= 0:
            raise Invalid("low", "a number > 0 for a log range", self.low)


@dataclass(frozen=True, kw_only=True)
class SearchFile(SearchSettings):
    params: dict[str, Union[list[Any], SearchParamFile]] = entry(
        check=bool, expected="a mapping of config keys to ranges")  # a list: {choices: [...]}


@dataclass(frozen=True)
class SpecFile:
    """A sweep spec as written (docs/sweeps.md, "Write a sweep")."""

    base: str = entry(expected="the path of a run config (relative to the spec)")
    objective: ObjectiveFile = entry(
        expected=f"a mapping with metric (e.g. {contract.HEADLINE.key}) and optionally direction")
    name: Optional[str] = entry(None, check=_sweep_name, expected=SWEEP_NAME)  # default: the file name
    description: str = ""
    factor: FactorFile = entry(factory=FactorFile,
                               expected="a mapping with description (and key, cell_name for a list of values)")
    cells: Union[list[Any], dict[str, Optional[dict[str, Any]]], None] = entry(
        None, expected="a list of values (with factor.key) or a mapping of named cells to overrides")
    seeds: Any = entry(1, check=_valid_seeds, expected=SEEDS)
    scales: Optional[dict[str, Optional[ScaleFile]]] = entry(
        None, expected="a mapping of scale name (cpu, paper) to settings")
    search: Optional[dict[str, Any]] = entry(None, expected="a mapping with params and trials")  # read as SearchFile
    claims: Optional[list[StatedClaim]] = entry(
        None, expected="a list of {better: CELL, worse: CELL, why: TEXT}: the hypotheses the report judges")

    def check(self) -> None:
        if (self.cells is None) == (self.search is None):
            raise Invalid(text="expected either 'cells' (a grid over one factor) or 'search' (an Optuna search)")
        key, template = self.factor.key, self.factor.cell_name
        if isinstance(self.cells, list):
            if not key:
                raise Invalid(text="key 'factor.key' is needed for a list of cell values (the dotted key they set)")
            if "{value" not in template:
                raise Invalid("factor.cell_name", "a name template such as '{value}x{value}'", template)
        elif self.cells is not None and key is not None:
            raise Invalid(text="key 'factor.key' applies to a list of values; named cells carry their own keys")
        if self.search is not None and (key is not None or template != "{value}"):
            raise Invalid(text="key 'factor.key' applies to a list of cells, not to a search")


# ---------------------------------------------------------------- loading


def load_spec(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep spec; every mistake is a UserError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep spec not found (the specs are in sweeps/)")
    src = str(path)
    if name is not None and not _sweep_name(name):
        raise UserError(f"--name {name!r}: expected {SWEEP_NAME}")
    data = load_yaml(path)
    raw = build(SpecFile, {**data, "name": name} if name else data, src)
    sweep_name = raw.name or path.stem
    if not _sweep_name(sweep_name):  # the file's name stands in for a missing `name`
        raise UserError(Invalid("name", SWEEP_NAME, sweep_name).message(src))
    if "\0" in raw.base:  # no file has such a name (and pathlib raises ValueError for it)
        raise UserError(Invalid("base", "the path of a run config (relative to the spec)", raw.base).message(src))
    base_path = (path.parent / raw.base).resolve()
    if not base_path.is_file():
        raise UserError(f"{src}: key 'base': no run config at {base_path}")
    search = _search(build(SearchFile, raw.search, src, "search."), src) if raw.search is not None else None
    seeds = _seed_tuple(raw.seeds)
    scales = {str(k): ScaleSettings(seeds=_seed_tuple(v.seeds) if v is not None and v.seeds is not None else None,
                                    overrides=flatten(v.overrides or {}, keep_empty=False) if v is not None else {})
              for k, v in (raw.scales or {}).items()}
    if search is not None:
        for where, value in [("seeds", seeds)] + [(f"scales.{k}.seeds", s.seeds) for k, s in scales.items()]:
            if value is not None and len(value) != 1:
                raise UserError(Invalid(where, "one seed for a search (each trial trains one run)", value).message(src))
    metric = raw.objective.metric
    cells = _cells(raw, src) if raw.cells is not None else ()
    return SweepSpec(name=sweep_name, path=path, base=base_path, description=raw.description or raw.factor.description,
                     cells=cells, seeds=seeds, objective=metric,
                     direction=raw.objective.direction or contract.score(metric).direction, scales=scales,
                     search=search, claims=_claims(raw.claims or [], cells, src))


def _claims(raw: list[StatedClaim], cells: tuple[Cell, ...], src: str) -> tuple[StatedClaim, ...]:
    """The spec's hypotheses, each between two of its cells."""
    names = [c.name for c in cells]
    for i, claim in enumerate(raw):
        for side in ("better", "worse"):
            if getattr(claim, side) not in names:
                raise UserError(Invalid(f"claims[{i}].{side}", "the name of a cell of this spec (" +
                                        ", ".join(names) + ")", getattr(claim, side)).message(src))
        if claim.better == claim.worse:
            raise UserError(Invalid(f"claims[{i}]", "two different cells", claim.better).message(src))
    return tuple(raw)


def _cells(raw: SpecFile, src: str) -> tuple[Cell, ...]:
    if isinstance(raw.cells, list):
        cells = [Cell(_cell_name(raw.factor.cell_name, v, src), {raw.factor.key: v}) for v in raw.cells]
    else:
        cells = [Cell(str(name), flatten(overrides or {}, keep_empty=False)) for name, overrides in raw.cells.items()]
    if not cells:
        raise UserError(f"{src}: key 'cells' expected at least one cell")
    names = [c.name for c in cells]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{src}: key 'cells' names the cell {name!r} twice")
        check_tag(name, "cells", src)
    return tuple(cells)


def _cell_name(template: str, value: Any, src: str) -> str:
    """A list cell's name from `factor.cell_name`; a template that cannot name this value is the spec's mistake."""
    try:
        return template.format(value=value)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise UserError(Invalid("factor.cell_name", "a name template such as '{value}x{value}' (only {value})",
                                shown=f"{template!r}, which cannot name the cell {value!r} ({type(exc).__name__})")
                        .message(src)) from None


def _search(raw: SearchFile, src: str) -> Search:
    params = []
    for key, value in raw.params.items():
        if isinstance(value, list):  # a list of choices
            value = build(SearchParamFile, {"choices": value}, src, f"search.params.{key}.")
        choices = tuple(value.choices) if value.choices is not None else None
        params.append(SearchParam(key=key, low=value.low, high=value.high, log=value.log, integer=value.integer,
                                  choices=choices))
    settings = {f.name: getattr(raw, f.name) for f in fields(SearchSettings)}
    return Search(params=tuple(params), **settings)

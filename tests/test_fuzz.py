"""The front doors, fuzzed: random YAML as a run config (`p2p train FILE`, `p2p describe FILE`) and as a
sweep spec (`p2p sweep FILE --dry-run`), and random `--set` values. Whatever comes in, the command
exits 0 (a valid file) or 2 with one line on stderr, never a traceback.

The CLI runs in this process; what comes after the loaders (training, building the nets, the sweep's
time estimate) is replaced by a stub, so each example costs milliseconds. Examples are drawn from a
fixed seed (the same every run); `P2P_FUZZ_EXAMPLES` raises their number for a longer hunt.
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from p2p.cli import main
from p2p.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FACADES = ROOT / "experiments" / "facades.yaml"
EXAMPLES = int(os.environ.get("P2P_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="P2P_FUZZ_EXAMPLES" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def flat_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys += flat_keys(value, f"{prefix}{key}.")
    return keys


CONFIG = yaml.safe_load(FACADES.read_text())
CONFIG_KEYS = flat_keys(CONFIG) + ["base", "data.square_halves", "runtime.out_dir", "eval.every_max_images"]
SPEC = {"name": "fuzz", "base": str(FACADES), "factor": {"key": "model.discriminator.patch",
                                                         "cell_name": "{value}x{value}"},
        "cells": [1, 16], "seeds": 1, "objective": {"metric": "eval/ssim"},
        "scales": {"cpu": {"seeds": 1, "set": {"eval.max_images": 4}}}}
SPEC_KEYS = flat_keys(SPEC) + ["description", "search", "search.params", "search.trials", "search.sampler",
                               "search.pruner", "search.startup_trials", "search.warmup_epochs",
                               "search.params.optim.lr", "cells.L1", "scales.paper", "objective.direction"]

# YAML's scalars, including the ones that trip loaders: huge integers, nan, dates, odd strings.
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["", "~", "1e-4", "1e999", "-.inf", ".nan", "2001-13-45", "2024-02-30", "0x1F", "0o17",
                              "1_000", "{value", "{value.x}", "{value[0]}", "{}", "{0}", "..", "a/b", "a b", ".x",
                              "AtoB", "unet", "lsgan", "none", "cpu", "paper", "eval/fcn_iou", "[1, 2]", "base"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4), max_leaves=12)


def set_dotted(data: dict, key: str, value) -> dict:
    head, _, rest = key.partition(".")
    data = dict(data)
    if rest:
        data[head] = set_dotted(data[head] if isinstance(data.get(head), dict) else {}, rest, value)
    else:
        data[head] = value
    return data


def mutated(base: dict, keys: list[str]):
    """A real document with some keys set to random values, or random keys added: deep into validation."""
    changes = st.lists(st.tuples(st.sampled_from(keys) | st.text(string.ascii_lowercase + "._", min_size=1, max_size=12),
                                 values), min_size=1, max_size=4)

    def apply(pairs):
        doc = base
        for key, value in pairs:
            doc = set_dotted(doc, key, value)
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    return changes.map(apply)


def documents(base: dict, keys: list[str]):
    """Mutated real documents, random YAML values, random text, and real files with one line garbled."""
    lines = yaml.safe_dump(base, sort_keys=False).splitlines()
    garbled = st.tuples(st.integers(0, len(lines)), st.text(max_size=30)).map(
        lambda t: "\n".join(lines[: t[0]] + [t[1]] + lines[t[0] + 1:]))
    return (mutated(base, keys) | values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)) | st.text(max_size=80)
            | garbled | st.binary(max_size=40))


def write(folder: Path, document: str | bytes, name: str = "doc.yaml") -> Path:
    path = folder / name
    path.write_bytes(document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass"))
    return path


def check_exit(capsys, argv: list[str]) -> None:
    """The command returns 0 or 2; a 2 says one line on stderr; nothing escapes as an exception."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    lines = err.strip().splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("p2p"), (argv, err)
        assert "Traceback" not in err
    else:
        assert lines == [], (argv, err)


@pytest.fixture
def stubs(monkeypatch, tmp_path):
    """What comes after the loaders, made instant: training, describing the nets, the sweep's estimate."""
    import p2p.describe
    import p2p.sweep.estimate
    import p2p.tracking
    import p2p.trainer

    monkeypatch.setattr(p2p.trainer, "train", lambda cfg, **kw: SimpleNamespace(run_id="stub", run_dir=tmp_path,
                                                                                 scores={}))
    monkeypatch.setattr(p2p.tracking, "check_store", lambda *a, **k: None)
    monkeypatch.setattr(p2p.describe, "describe", lambda cfg: {})
    monkeypatch.setattr(p2p.describe, "format_description", lambda info: "")
    monkeypatch.setattr(p2p.sweep.estimate, "describe_plan", lambda *a, **k: "")
    monkeypatch.setenv("P2P_SWEEP_STORAGE", f"sqlite:///{tmp_path / 'never-created.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never-created-mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# What the fuzzing found once (each crashed with a traceback before it was fixed), kept as fixed examples.
CONFIG_FOUND = [b"\x80", '"\\v": 1', "name: 2001-13-45", "base: doc.yaml", 'base: "a\\0b"', "[" * 2000]
SPEC_FOUND = [yaml.safe_dump({**SPEC, "factor": {**SPEC["factor"], "cell_name": name}})
              for name in ("{value.x}", "{value[0]}", "{value}{", "{value}{0}", "{value!z}")]
SPEC_FOUND += [yaml.safe_dump({**SPEC, "seeds": 10**12}), yaml.safe_dump({**SPEC, "base": "a\0b"})]
SET_FOUND = [["optim.lr=2001-13-45"], ["name=" + "[" * 2000], ["a..b=1"], ["=x"], ["data.root=a\x0bb"]]


def found(cases: list, name: str):
    def decorate(test):
        for case in cases:
            test = example(**{name: case})(test)
        return test
    return decorate


@FUZZ
@given(document=documents(CONFIG, CONFIG_KEYS))
@found(CONFIG_FOUND, "document")
def test_random_yaml_as_a_run_config_is_one_line_or_valid(stubs, capsys, document):
    path = write(stubs, document)
    check_exit(capsys, ["describe", str(path)])
    check_exit(capsys, ["train", str(path), "--no-progress"])


@FUZZ
@given(document=documents(SPEC, SPEC_KEYS))
@found(SPEC_FOUND, "document")
def test_random_yaml_as_a_sweep_spec_is_one_line_or_valid(stubs, capsys, document):
    path = write(stubs, document)
    check_exit(capsys, ["sweep", str(path), "--dry-run", "--scale", "cpu"])
    assert not (stubs / "never-created.db").exists()


overrides = (st.text(max_size=40)
             | st.tuples(st.sampled_from(CONFIG_KEYS) | st.text(max_size=10), st.text(max_size=20)).map("=".join)
             | st.tuples(st.sampled_from(CONFIG_KEYS), values.map(lambda v: yaml.safe_dump(v, default_flow_style=True)
                                                                  .strip().removesuffix("..."))).map("=".join))


@FUZZ
@given(values=st.lists(overrides, min_size=1, max_size=3))
@found(SET_FOUND, "values")
def test_random_set_values_are_one_line_or_valid(stubs, capsys, values):
    sets = [f"--set={v}" for v in values]
    check_exit(capsys, ["describe", str(FACADES), *sets])
    check_exit(capsys, ["train", str(FACADES), *sets, "--no-progress"])


@FUZZ
@given(values=st.lists(overrides, min_size=1, max_size=2))
def test_random_set_values_on_a_sweep_are_one_line_or_valid(stubs, capsys, values):
    spec = write(stubs, yaml.safe_dump(SPEC), "spec.yaml")
    check_exit(capsys, ["sweep", str(spec), "--dry-run", "--scale", "cpu", *[f"--set={v}" for v in values]])


def test_the_harness_fails_on_a_traceback_or_a_second_line(stubs, capsys, monkeypatch):
    """What the fuzzing above must catch does fail it: an exception escaping, or an error of two lines."""
    import p2p.describe

    def crash(cfg):
        raise KeyError("a bug")

    def noisy(cfg):
        print("a stray line", file=sys.stderr)
        raise UserError(f"{FACADES}: bad")

    monkeypatch.setattr(p2p.describe, "describe", crash)
    with pytest.raises(KeyError):
        check_exit(capsys, ["describe", str(FACADES)])
    monkeypatch.setattr(p2p.describe, "describe", noisy)
    with pytest.raises(AssertionError):
        check_exit(capsys, ["describe", str(FACADES)])

"""The schema engine of run configs and sweep specs: YAML -> typed, frozen dataclasses.

A schema is a frozen dataclass whose fields carry their types and, through `entry()`, their
bounds (`ge`, `gt`, `le`, `lt`), a `check` with what it `expected`, or a YAML name (`alias`).
Rules that tie several fields together are a `check(self)` method raising `Invalid` with a key
relative to the object. `build(cls, data, source)` reads a mapping into one, and every mistake
is a `UserError` naming the file and the dotted key:

    {source}: unknown key 'data.foo' (expected one of: ...)
    {source}: key 'optim.epochs' expected an integer, got 'ten'
    {source}: key 'optim.lr' expected a learning rate > 0, got -1.0

Also here: reading YAML files, `--set key=value` overrides, and the dotted keys of nested mappings.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from p2p.errors import UserError

_MISSING = dataclasses.MISSING
_NO_VALUE = object()


class Invalid(Exception):
    """A value that breaks a rule: `key` (relative to the object checked; "" for the object itself)
    expected `expected`, got `got` (or `shown`, already formatted).

    With only `text`, the message is that text after the file name (for rules no single key states).
    """

    def __init__(self, key: str = "", expected: str = "", got: Any = _NO_VALUE, *, shown: str | None = None,
                 text: str = ""):
        super().__init__(text or f"key '{key}' expected {expected}")
        self.key, self.expected, self.got, self.shown, self.text = key, expected, got, shown, text

    def message(self, source: str, prefix: str = "") -> str:
        if self.text:
            return f"{source}: {self.text}"
        key = f"{prefix}{self.key}" if self.key else prefix.rstrip(".")
        got = f", got {self.shown}" if self.shown is not None else "" if self.got is _NO_VALUE else \
            f", got {plain(self.got)!r}"
        return f"{source}: key '{key}' expected {self.expected}{got}"


def entry(default: Any = _MISSING, *, factory: Callable[[], Any] | None = None, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None, noun: str | None = None,
          note: str | None = None, expected: str | None = None, check: Callable[[Any], bool] | None = None,
          alias: str | None = None) -> Any:
    """A schema field with its rules.

    `ge`/`gt`/`le`/`lt` bound a number; what the message says it expected is built from them
    ("an integer >= 1", "a probability in [0, 1]" with `noun="a probability"`, "(0 = PixelGAN)"
    with `note`), unless `expected` says it (which is also what a value of the wrong type is told).
    `check(value)` is any other rule on the value; `alias` is the field's YAML name.
    """
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "noun": noun, "note": note, "expected": expected,
                "check": check, "alias": alias}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def yaml_name(f: dataclasses.Field) -> str:
    return f.metadata.get("alias") or f.name


def build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """`data` (a mapping read from YAML) as an instance of the schema `cls`, every rule checked."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise UserError(f"{source}: key '{where}' expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {yaml_name(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise UserError(f"{source}: unknown key '{prefix}{key}' (expected one of: {', '.join(sorted(fields))})")
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            values[f.name] = _field_value(f, hints[f.name], data[name], source, key)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            values[f.name] = _field_value(f, hints[f.name], None, source, key)  # required: None says what is wanted
    obj = cls(**values)
    rule = getattr(obj, "check", None)
    if rule is not None:
        try:
            rule()
        except Invalid as bad:
            raise UserError(bad.message(source, prefix)) from None
    return obj


def _field_value(f: dataclasses.Field, tp: Any, raw: Any, source: str, key: str) -> Any:
    meta = f.metadata
    value = coerce(tp, raw, source, key, meta.get("expected"))  # the wrong type: told its type, or `expected`
    if value is None:
        return value
    if not _within(value, meta) or (meta.get("check") is not None and not meta["check"](value)):
        raise UserError(Invalid(key, meta.get("expected") or _bounds_text(tp, meta), value).message(source))
    return value


def _within(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    if not isinstance(value, (int, float)):
        return True
    return not ((meta.get("ge") is not None and value < meta["ge"]) or (meta.get("gt") is not None and value <= meta["gt"])
                or (meta.get("le") is not None and value > meta["le"]) or (meta.get("lt") is not None and value >= meta["lt"]))


def _bounds_text(tp: Any, meta: typing.Mapping[str, Any]) -> str:
    """'an integer >= 1', 'null or an integer >= 1', 'a rate in [0, 1)', ... from a field's bounds."""
    low = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta["gt"]) if meta.get("gt") is not None else None
    high = ("]", meta["le"]) if meta.get("le") is not None else (")", meta["lt"]) if meta.get("lt") is not None else None
    optional = type(None) in typing.get_args(tp)
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if optional else [tp]
    noun = meta.get("noun") or ("an integer" if inner == [int] else "a number")
    if low and high:
        text = f"{noun} in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    elif low:
        text = f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    elif high:
        text = f"{noun} {'<=' if high[0] == ']' else '<'} {high[1]:g}"
    else:
        text = noun
    if meta.get("note"):
        text += f" ({meta['note']})"
    return f"null or {text}" if optional else text


def coerce(tp: Any, value: Any, source: str, key: str, expected: str | None = None) -> Any:
    """`value` as type `tp`: dataclasses, Optional/Union, Literal, bool, int, float, str, Any,
    dict[str, T], list[T], tuple[T, ...] and fixed tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(what: str) -> typing.NoReturn:
        raise UserError(f"{source}: key '{key}' expected {expected or what}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail("a mapping")
        return build(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        matching = [a for a in inner if _shape_fits(a, value)] if len(inner) > 1 else inner
        if len(matching) == 1:
            return coerce(matching[0], value, source, key, expected)
        fail(" or ".join(_type_text(a) for a in inner))
    if origin is Literal:
        if value in args:
            return value
        fail("one of " + ", ".join(repr(a) for a in args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if tp is float:
        number = number_or_none(value)
        if number is not None:
            return number
        fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        if not args:
            return dict(value)
        return {k: coerce(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is list or origin is list:
        if not isinstance(value, list):
            fail("a list")
        return [coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(f"a list of {len(args)} values")
        return tuple(coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in a schema, not user input


def _shape_fits(tp: Any, value: Any) -> bool:
    """Which member of a Union a value is meant for, by its YAML shape (mapping, list or scalar)."""
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return not isinstance(value, (dict, list, tuple))


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "a mapping"
    if origin in (list, tuple):
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def number_or_none(value: Any) -> float | None:
    """A finite number as a float; YAML 1.1 reads `1e-4` (no dot) as a string, which counts too."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# ---------------------------------------------------------------- YAML files and overrides


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except Exception as exc:  # yaml's constructors raise others: ValueError for a date like 2001-13-45, ...
        raise UserError(f"{path}: is not valid YAML ({type(exc).__name__}: {str(exc)[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (so 1e-4, true, null, [0.8, 1.0] are typed)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except Exception:  # not YAML (a YAMLError, or a ValueError for a date like 2001-13-45): the text itself
        value = raw
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> dict:
    data = dict(data)
    head, _, rest = key.partition(".")
    if rest:
        child = data.get(head)
        data[head] = set_dotted(child if isinstance(child, dict) else {}, rest, value)
    else:
        data[head] = value
    return data


def apply_overrides(data: dict, overrides: dict[str, Any] | list[str] | None) -> dict:
    if not overrides:
        return data
    pairs = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in pairs:
        data = set_dotted(data, key, value)
    return data


def flatten(data: dict, prefix: str = "", keep_empty: bool = True) -> dict[str, Any]:
    """Dotted keys: {'model.discriminator.patch': 70, ...} (MLflow params, a spec's nested overrides).

    An empty mapping stays a value under its key, unless `keep_empty` is false (then it is dropped).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and (value or not keep_empty):
            flat.update(flatten(value, f"{prefix}{key}.", keep_empty))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plain(value: Any) -> Any:
    """Dataclasses as nested dicts and tuples as lists: what YAML and messages show."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {yaml_name(f): plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value

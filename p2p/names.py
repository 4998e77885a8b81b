"""Names that become parts of paths, checked in one place: a name is a name, never a path.

A run's `name` is a folder under `runtime.out_dir`, a sweep's name and its cells are folders under
`<out_dir>/sweeps`, a dataset's name (and `eval.split`) a folder under `data.root`, the dataset's name
part of the cache's file names (decoded splits, FCN scorers); `experiment` names an MLflow experiment
and is held to the same rule. None of them may reach outside the folder it belongs to, so a
name is one path component: not empty, not `.` or `..`, no `/` or `\\`, no drive (`C:`), no NUL or
other control character. (`runtime.out_dir`, `data.root` and the cache folder are paths the user
chooses; they are not names.)

`is_name` / `check_name` are the rule (the schema's `entry(check=is_name, expected=NAME)` at load, and
the places that take a name from elsewhere); `inside` is the check after a folder is resolved;
`check_tag` / `tag_folder` are a sweep cell's name, whose `/` is kept as `__` in its folder.
Every refusal is a `UserError`: one line naming the key, the file and what a name may be.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PureWindowsPath
from typing import Any

from p2p.errors import UserError
from p2p.schema import Invalid

NAME = "a name, not a path (not empty, '.' or '..'; no '/', '\\', drive like 'C:' or control characters)"
TAG = ("a cell name (names joined by '/', none empty or starting with '.'; no '\\', drive like 'C:' "
       "or control characters)")
TAG_SEPARATOR, TAG_FOLDER_SEPARATOR = "/", "__"  # a cell `unet/L1` has the folder `unet__L1`

_CONTROL = {"Cc", "Cs", "Zl", "Zp"}  # control characters, lone surrogates, line and paragraph separators


def is_name(value: Any) -> bool:
    """Whether `value` is one path component that stays where it is put (see the module's text)."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and not any(unicodedata.category(c) in _CONTROL for c in value) and not PureWindowsPath(value).anchor)


def _refuse(key: str, expected: str, value: Any, file: str | None) -> UserError:
    invalid = Invalid(key, expected, value)
    return UserError(invalid.message(file) if file else invalid.message("").removeprefix(": "))


def check_name(value: Any, key: str, file: str | None = None) -> str:
    """`value` when it is a name, else a UserError: `{file}: key '{key}' expected a name (...), got '../x'`."""
    if not is_name(value):
        raise _refuse(key, NAME, value, file)
    return value


def is_tag(value: Any) -> bool:
    """A sweep cell's name: names joined by `/` (`unet/L1+cGAN`), none of them hidden (starting with `.`)."""
    return (isinstance(value, str) and is_name(tag_folder(value))
            and all(is_name(part) and not part.startswith(".") for part in value.split(TAG_SEPARATOR)))


def check_tag(value: Any, key: str, file: str | None = None) -> str:
    if not is_tag(value):
        raise _refuse(key, TAG, value, file)
    return value


def tag_folder(tag: str) -> str:
    """The folder of a cell: its name as one path component (`unet/L1` -> `unet__L1`)."""
    return tag.replace(TAG_SEPARATOR, TAG_FOLDER_SEPARATOR)


def inside(root: str | Path, path: str | Path, key: str, file: str | None = None, expected: str = NAME) -> Path:
    """`path` when it lies inside `root` (both made absolute, `..` resolved by the letters, symlinks left as
    the user made them), else a UserError naming the key that built it and what it expected."""
    base, full = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if full == base or base not in full.parents:
        where = f"{file}: " if file else ""
        raise UserError(f"{where}key '{key}' makes the path {full}, which is not inside {base} (expected {expected})")
    return Path(path)

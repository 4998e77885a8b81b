"""Where p2p keeps what it computes once and reuses: fitted FCN scorers, decoded datasets."""

from __future__ import annotations

import os
from pathlib import Path

from p2p.names import inside

CACHE_ENV = "P2P_CACHE_DIR"
DEFAULT_CACHE = Path(".cache") / "p2p"  # in the current folder: the project root for `make` and `p2p`


def cache_root(cache_dir: str | None = None) -> Path:
    """`cache_dir` (e.g. `eval.cache_dir`), else `$P2P_CACHE_DIR`, else `.cache/p2p` in the current folder."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def cache_file(kind: str, file_name: str, key: str, cache_dir: str | None = None) -> Path:
    """`<cache root>/<kind>/<file_name>`, refused (a UserError naming `key`, what the name was made from)
    unless it lies inside that folder."""
    folder = cache_root(cache_dir) / kind
    return inside(folder, folder / file_name, key)


"""Networks from a config, like timm's `create_model`: `create_generator`, `create_discriminator`.

The factories (`p2p.models.factory`) are imported on first use, with torch: `p2p.models.geometry`,
which the config schema reads to check a crop against the networks, stays free of it.
"""

from __future__ import annotations

from typing import Any

_FACTORY = ("channels", "count_parameters", "create_discriminator", "create_generator")
__all__ = list(_FACTORY)


def __getattr__(name: str) -> Any:
    if name in _FACTORY:
        from p2p.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'p2p.models' has no attribute {name!r}")

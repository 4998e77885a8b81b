"""Networks from a config, like timm: a registry of models by name (`p2p.models.registry`, timm's
`register_model`) and factories that build them (`create_generator`, `create_discriminator`, timm's
`create_model`).

The factories (`p2p.models.factory`) are imported on first use, with torch: `p2p.models.registry` and
`p2p.models.geometry`, which the config schema reads to check a name and a crop against the networks,
stay free of it.
"""

from __future__ import annotations

from typing import Any

_FACTORY = ("channels", "count_parameters", "create_discriminator", "create_generator", "generator_from_saved")
_REGISTRY = ("discriminator_names", "generator_names", "register_discriminator", "register_generator")
__all__ = list(_FACTORY + _REGISTRY)


def __getattr__(name: str) -> Any:
    if name in _FACTORY:
        from p2p.models import factory  # lazy: torch, on first use (see above)

        return getattr(factory, name)
    if name in _REGISTRY:
        from p2p.models import registry  # lazy, as factory

        return getattr(registry, name)
    raise AttributeError(f"module 'p2p.models' has no attribute {name!r}")

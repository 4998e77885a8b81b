"""Random streams as common random numbers: one seeded generator per consumer of randomness.

With the same `seed`, every cell of a sweep draws the same generator weights (where the
architecture is the same), the same images in the same order with the same crops and flips,
and the same trick draws; a cell that consumes randomness the others do not (a
discriminator, dropout, one trick) draws it from its own stream, so it shifts no other.
Streams are keyed by name, not by the order they are created in.
"""

from __future__ import annotations

import hashlib

import torch

DATA = "data"  # shuffling, crops, mirrors (p2p.data.TrainLoader)
INIT_GENERATOR = "init.generator"
INIT_DISCRIMINATOR = "init.discriminator"
DROPOUT = "dropout"  # the generator's dropout masks (p2p.models.layers.Dropout), a generator of its own
TRICK_STREAMS = ("smoothing", "flip", "noise", "pool")  # one per GAN trick (p2p.losses)


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream of a run seed (stable across versions and machines)."""
    digest = hashlib.sha256(f"p2p/{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The stream's generator on `device`: draws stay on the device that uses them (a CUDA graph replays them).
    The same seed on another kind of device is another sequence of numbers, the same for every cell there."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


class TrickStreams:
    """The tricks' generators: label smoothing, label flipping, instance noise (on the training device), and
    the image pool (its choices are made on the host)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.smoothing, self.flip, self.noise = (generator(seed, f"tricks.{n}", device) for n in TRICK_STREAMS[:3])
        self.pool = generator(seed, "tricks.pool")

    def on_device(self) -> tuple[torch.Generator, ...]:
        """The generators a step draws from on its device (what a CUDA graph must register)."""
        return self.smoothing, self.flip, self.noise

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).get_state() for name in TRICK_STREAMS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in TRICK_STREAMS:
            getattr(self, name).set_state(state[name])

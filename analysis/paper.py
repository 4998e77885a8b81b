"""The paper's tables and findings, and the comparisons that test each finding here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from p2p import contract

TABLES = Path(__file__).parent / "data" / "pix2pix-tables.yaml"
# The paper's columns and the scores of ours that correspond to them.
PAPER_METRICS = {s.paper: s.key for s in contract.SCORES if s.paper}
TABLE_NAMES = {"loss": "Table 1", "generator": "Table 2", "patchsize": "Table 3"}


@dataclass(frozen=True)
class Claim:
    """'`better` scores above `worse`': one testable piece of a finding."""

    better: str
    worse: str
    why: str = ""
    # True: a hypothesis stated before the runs (the paper's, or a spec's `claims:`), judged reproduced / reversed.
    # False: a comparison nobody claimed (each cell against the spec's first), read as what it found: higher / lower.
    stated: bool = True


# Each finding of the paper (the `findings:` of the tables file) as pairwise claims.
CLAIMS: dict[str, list[Claim]] = {
    "patchsize": [
        Claim("70x70", "1x1", "a PixelGAN is too local"),
        Claim("16x16", "1x1", "a PixelGAN is too local"),
        Claim("70x70", "286x286", "an ImageGAN has too many parameters and is harder to train"),
        Claim("16x16", "286x286", "an ImageGAN has too many parameters and is harder to train"),
    ],
    "loss": [
        Claim("L1+cGAN", "L1", "L1+cGAN scores highest"),
        Claim("L1+cGAN", "cGAN", "L1+cGAN scores highest"),
        Claim("L1+cGAN", "L1+GAN", "L1+cGAN scores highest"),
        Claim("L1+cGAN", "GAN", "L1+cGAN scores highest"),
        Claim("cGAN", "GAN", "conditioning matters"),
        Claim("L1+GAN", "L1", "L1 alone is blurry and scores low"),
    ],
    "generator": [
        Claim("unet/L1", "encoder_decoder/L1", "U-Net beats encoder-decoder"),
        Claim("unet/L1+cGAN", "encoder_decoder/L1+cGAN", "U-Net beats encoder-decoder"),
        Claim("encoder_decoder/L1", "encoder_decoder/L1+cGAN", "adding cGAN hurts the encoder-decoder"),
        Claim("unet/L1+cGAN", "unet/L1", "adding cGAN helps the U-Net"),
    ],
}


def load_tables(path: Path = TABLES) -> dict:
    return yaml.safe_load(path.read_text())


def paper_table(sweep: str, tables: dict | None = None) -> dict[str, dict[str, float]] | None:
    """{cell: {our metric key: the paper's value}} for a sweep with a table in the paper, else None."""
    tables = tables or load_tables()
    table = tables["tables"].get(sweep)
    if table is None:
        return None
    columns = [PAPER_METRICS[m] for m in tables["metrics"]]
    return {cell: dict(zip(columns, values)) for cell, values in table.items()}


def finding(sweep: str, tables: dict | None = None) -> str | None:
    tables = tables or load_tables()
    return tables.get("findings", {}).get(sweep)


def source(tables: dict | None = None) -> str:
    tables = tables or load_tables()
    return f"{tables['source']}, {tables['dataset']}"


def comparison_note(dataset: str | None, tables: dict | None = None) -> str:
    """How to read the paper's table beside a sweep's means, given the dataset the sweep ran on (`data.dataset`).

    On the paper's own dataset (Cityscapes) rankings, differences and, with a comparable FCN, the values
    themselves compare; on any other dataset (facades) only rankings and differences do.
    """
    tables = tables or load_tables()
    notes = tables["comparison"]
    if dataset is not None and dataset == tables["paper_dataset"]:
        return notes["same_dataset"]
    return notes["other_dataset"]


"""`p2p data NAME` / `make data`: fetch a public pix2pix dataset release (for users who are online).

The releases live in the pix2pix datasets folder at Berkeley, one `NAME.tar.gz` each holding
`NAME/{train,val,test}`. `python -m p2p.download NAME ROOT [URL]` does the same as `p2p data`.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from p2p.errors import UserError, first_line

RELEASE = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"


@dataclass(frozen=True)
class Release:
    """One dataset of the pix2pix release: what unpacking it should give (checked, with a warning if not)."""

    splits: dict[str, int] = field(default_factory=dict)  # images per split, where known
    note: str = ""  # printed before downloading

    def url(self, name: str) -> str:
        return RELEASE.format(name=name)


CITYSCAPES_NOTE = (
    "Cityscapes comes with its own terms of use (https://www.cityscapes-dataset.com); read them before using "
    "it. The pix2pix maintainers' current download script no longer fetches this archive; "
    "if it fails, build the same folder from Cityscapes' gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip "
    "with pytorch-CycleGAN-and-pix2pix's datasets/prepare_cityscapes_dataset.py (it puts the 500 val images in "
    "test/: then train with --set eval.split=test)."
)
RELEASES = {
    "facades": Release({"train": 400, "val": 100, "test": 106}),
    "cityscapes": Release({"train": 2975, "val": 500}, CITYSCAPES_NOTE),
    "maps": Release(),
    "edges2shoes": Release(),
    "edges2handbags": Release(),
    "night2day": Release(),
}
DATASETS = tuple(RELEASES)


def download(name: str, root: Path, url: str | None = None) -> Path:
    """Download and unpack `name` into `root/name`; nothing is left behind if it fails."""
    if url is None and name not in RELEASES:
        raise UserError(f"dataset '{name}': expected one of {', '.join(DATASETS)}")
    release = RELEASES.get(name, Release())
    target = root / name
    if target.is_dir() and any(target.iterdir()):
        print(f"{target} already exists")
        return target
    url = url or release.url(name)
    if release.note:
        print(f"note: {release.note}", file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.tar.gz"
        fetch(url, archive, name, target)
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # truncated, not an archive, a full disk
            raise UserError(f"{url}: cannot unpack the archive ({first_line(exc)}); nothing was kept, "
                            f"put the dataset under {target} by hand or try again") from None
        source = unpacked / name if (unpacked / name).is_dir() else unpacked
        if not (source / "train").is_dir():
            raise UserError(f"{url}: archive holds no {name}/train folder")
        shutil.move(str(source), str(target))
    for line in check_splits(target, release.splits):
        print(f"p2p: warning: {line}", file=sys.stderr)
    print(f"{name} ready in {target}")
    return target


def fetch(url: str, archive: Path, name: str, target: Path) -> None:
    """`url` into the file `archive`, with a progress bar; a failure is one line saying where to put the data."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise UserError(f"{url}: download failed ({exc}); put the dataset under {target} by hand") from None


def check_splits(folder: Path, expected: dict[str, int]) -> list[str]:
    """What differs from the release's known split sizes (a truncated or different archive), one line each."""
    found = []
    for split, count in expected.items():
        files = [p for p in (folder / split).glob("*") if p.is_file()] if (folder / split).is_dir() else []
        if len(files) != count:
            found.append(f"{folder / split}: {len(files)} images, the release has {count}")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: python -m p2p.download NAME ROOT [URL]", file=sys.stderr)
        return 2
    try:
        download(argv[0], Path(argv[1]), argv[2] if len(argv) == 3 else None)
    except UserError as exc:
        print(f"p2p: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

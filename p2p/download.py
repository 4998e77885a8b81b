"""`make data`: fetch a public pix2pix dataset release (for users who are online)."""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from p2p.errors import UserError

RELEASE = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
DATASETS = ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day")


def download(name: str, root: Path, url: str | None = None) -> Path:
    """Download and unpack `name` into `root/name`; nothing is left behind if it fails."""
    if url is None and name not in DATASETS:
        raise UserError(f"dataset '{name}': expected one of {', '.join(DATASETS)}")
    target = root / name
    if target.is_dir() and any(target.iterdir()):
        print(f"{target} already exists")
        return target
    url = url or RELEASE.format(name=name)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            raise UserError(f"{url}: download failed ({exc}); put the dataset under {target} by hand") from None
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        source = unpacked / name if (unpacked / name).is_dir() else unpacked
        if not (source / "train").is_dir():
            raise UserError(f"{url}: archive holds no {name}/train folder")
        shutil.move(str(source), str(target))
    print(f"{name} ready in {target}")
    return target


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

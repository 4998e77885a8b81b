"""`make data`: download and unpack a pix2pix release (here from a local archive URL)."""

import tarfile

import pytest
import torch
from torchvision.io import write_png

from p2p.download import download
from p2p.errors import UserError


def test_download_unpacks_into_root(tmp_path):
    src = tmp_path / "src" / "facades" / "train"
    src.mkdir(parents=True)
    write_png(torch.zeros(3, 4, 8, dtype=torch.uint8), str(src / "1.png"))
    archive = tmp_path / "facades.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "facades", arcname="facades")
    root = tmp_path / "datasets"
    target = download("facades", root, url=archive.as_uri())
    assert target == root / "facades" and (target / "train" / "1.png").is_file()
    assert [p.name for p in root.iterdir()] == ["facades"]  # no temporary leftovers


def test_failed_download_leaves_nothing(tmp_path):
    root = tmp_path / "datasets"
    with pytest.raises(UserError, match="download failed"):
        download("facades", root, url=(tmp_path / "missing.tar.gz").as_uri())
    assert list(root.iterdir()) == []
    with pytest.raises(UserError, match="dataset 'mnist': expected one of facades"):
        download("mnist", root)

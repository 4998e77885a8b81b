"""Decoded splits read memory-mapped: the same batches as in memory, bounded memory while decoding and training."""

import errno
import os
import sys

import pytest
import torch
from torchvision.io import write_jpeg

from p2p import checkpoint, data, decoded_cache, images
from p2p.config import DataConfig
from p2p.pairs import decode_pairs


def make_jpegs(root, n=7, size=24, split="train"):
    """A toy dataset of A|B JPEGs (each half size x size), noisy enough that bicubic resizing matters."""
    folder = root / "toy" / split
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        write_jpeg(torch.randint(0, 256, (3, size, 2 * size), dtype=torch.uint8, generator=g), str(folder / f"{i + 1}.jpg"))
    return root


def batches(loader, epochs=2):
    return [(x.clone(), y.clone()) for _ in range(epochs) for x, y in loader.epoch()]


@pytest.mark.parametrize("task", ["aligned", "colorization"])
def test_memory_mapped_and_in_memory_splits_give_identical_batches(tmp_path, monkeypatch, task):
    root = make_jpegs(tmp_path / "data")
    cfg = DataConfig(root=str(root), dataset="toy", direction="BtoA", task=task, load_size=20, crop_size=16)
    per_image = (1 if task == "colorization" else 3) * 20 * 20 + 3 * 20 * 20
    monkeypatch.setattr(decoded_cache, "DECODE_CHUNK_BYTES", 3 * per_image)  # 7 images: chunks of 3, 3 and 1
    written = []
    pwrite = decoded_cache._pwrite_all
    monkeypatch.setattr(decoded_cache, "_pwrite_all",
                        lambda fd, buf, offset: (written.append(buf.nbytes), pwrite(fd, buf, offset)))

    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "memory"))
    in_memory = data.load_pairs(cfg, "train", 20, memory_map=False)
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "mapped"))
    mapped = data.load_pairs(cfg, "train", 20)
    assert not in_memory.mapped and mapped.mapped
    assert written == [3 * per_image, 3 * per_image, per_image]  # decoded a chunk at a time, straight to the file
    assert torch.equal(in_memory.pairs, mapped.pairs) and in_memory.names == mapped.names
    assert in_memory.in_channels == mapped.in_channels == (1 if task == "colorization" else 3)

    for batch_size in (1, 3):
        a = batches(data.TrainLoader(in_memory, 16, batch_size, flip=True, seed=5))
        b = batches(data.TrainLoader(mapped, 16, batch_size, flip=True, seed=5))
        assert len(a) == len(b) == 2 * -(-7 // batch_size)
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    # the mapped loader gave its pages back but the data is intact
    assert torch.equal(in_memory.pairs, mapped.pairs)


def test_the_mapped_file_is_the_plain_cache_file_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    root = make_jpegs(tmp_path / "data", n=3)
    cfg = DataConfig(root=str(root), dataset="toy", direction="AtoB")
    first = data.load_pairs(cfg, "train", 24)
    files = list((tmp_path / "cache" / "decoded").iterdir())
    assert [f.name for f in files] == [decoded_cache.file_for(cfg, root / "toy" / "train",
                                                               images.list_images(root / "toy" / "train"), 24).name]
    plain = checkpoint.load_plain(files[0], "decoded-data cache")  # tensors and plain values, weights_only
    assert torch.equal(plain["pairs"], first.pairs) and plain["names"] == ["1.jpg", "2.jpg", "3.jpg"]

    monkeypatch.setattr(images, "read_rgb", lambda path: pytest.fail(f"decoded {path} again"))
    again = data.load_pairs(cfg, "train", 24)
    assert again.mapped and torch.equal(again.pairs, first.pairs)
    in_memory = data.load_pairs(cfg, "train", 24, memory_map=False)  # the same file, read into memory
    assert not in_memory.mapped and torch.equal(in_memory.pairs, first.pairs)


def test_a_full_disk_decodes_in_memory_with_a_warning_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    root = make_jpegs(tmp_path / "data", n=3)
    cfg = DataConfig(root=str(root), dataset="toy")
    expected = decode_pairs(cfg, "train", images.list_images(root / "toy" / "train"), 24, False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # No room for the mapped file (found before decoding): decoded in memory, then kept the old way.
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    pairs = data.load_pairs(cfg, "train", 24)
    assert not pairs.mapped and torch.equal(pairs.pairs, expected.pairs)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot keep the decoded split (No space left on device)" in lines[0], lines
    kept = list((tmp_path / "a" / "decoded").iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".pt" and not kept[0].name.startswith(".")  # no .tmp, no .scratch

    # No room at all: in memory, one line per failed write, nothing left behind.
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "b"))
    monkeypatch.setattr(checkpoint, "save_atomic", full)
    pairs = data.load_pairs(cfg, "train", 24)
    assert not pairs.mapped and torch.equal(pairs.pairs, expected.pairs)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("No space left on device" in line for line in lines), lines
    assert list((tmp_path / "b" / "decoded").iterdir()) == []


def rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident pages are read from /proc")
def test_released_images_leave_resident_memory(tmp_path):
    """What bounds a training process's memory: pages of images already copied are dropped from it."""
    n, size = 64, 128  # 64 images of 6 x 128 x 128 = 6 MiB
    pairs = torch.randint(0, 256, (n, 6, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "split.pt"
    checkpoint.save_atomic({"pairs": pairs, "names": [str(i) for i in range(n)], "in_channels": 3}, path)
    mapped = decoded_cache.read(path)
    assert mapped.mapped
    before = rss_file_kib()
    assert torch.equal(mapped.pairs, pairs)  # every page touched: resident
    touched = rss_file_kib()
    for i in range(n):
        mapped.release(i)
    released = rss_file_kib()
    split_kib = pairs.numel() // 1024
    assert touched - before > 0.9 * split_kib
    assert touched - released > 0.9 * split_kib
    assert torch.equal(mapped.pairs, pairs)  # read again from the page cache, unchanged

    # An epoch read from disk: each fault maps the page cache's pages around it (the neighbours' too), and
    # the loader's release covers them, so nothing of the split stays resident.
    for i in range(n):
        mapped.release(i)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache: the next reads go to disk
    finally:
        os.close(fd)
    before_epoch = rss_file_kib()
    for _ in data.TrainLoader(mapped, size - 16, 1, flip=True, seed=0).epoch():
        pass
    assert rss_file_kib() - before_epoch < 0.1 * split_kib

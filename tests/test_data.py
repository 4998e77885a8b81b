"""Aligned pairs: direction, identical jitter on both halves, colorization, and clear errors."""

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from p2p import data, images
from p2p.config import DataConfig
from p2p.errors import UserError


def make_dataset(root, n=3, size=32, same_halves=False, split="train"):
    folder = root / "toy" / split
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        a = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
        b = a.clone() if same_halves else torch.full((3, size, size), 40 * i, dtype=torch.uint8)
        write_png(torch.cat([a, b], -1), str(folder / f"{i + 1}.png"))
    return root


def test_direction_picks_the_halves(tmp_path):
    root = make_dataset(tmp_path)
    ab = data.load_pairs(DataConfig(root=str(root), dataset="toy", direction="AtoB"), "train", 32)
    ba = data.load_pairs(DataConfig(root=str(root), dataset="toy", direction="BtoA"), "train", 32)
    assert ab.names == ["1.png", "2.png", "3.png"]
    a_in, a_out = ab.split(ab.pairs)
    b_in, b_out = ba.split(ba.pairs)
    assert torch.equal(a_in, b_out) and torch.equal(a_out, b_in)
    assert torch.equal(a_out[1], torch.full((3, 32, 32), 40, dtype=torch.uint8))  # B of image 2


def test_jitter_is_identical_on_input_and_target(tmp_path):
    root = make_dataset(tmp_path, n=4, size=40, same_halves=True)
    cfg = DataConfig(root=str(root), dataset="toy", load_size=40, crop_size=32)
    loader = data.load_train(cfg, batch_size=2, seed=1)
    crops = set()
    for _ in range(5):
        for x, y in loader.epoch():
            assert x.shape == (2, 3, 32, 32) and y.shape == (2, 3, 32, 32)
            assert torch.equal(x, y)  # same crop offsets and mirroring on both halves
            assert x.min() >= -1 and x.max() <= 1
            crops.add(float(x[0, 0, 0, 0]))
    assert len(crops) > 3  # the crops do move


def test_loader_state_round_trip_gives_the_same_batches(tmp_path):
    root = make_dataset(tmp_path, n=4, size=40)
    cfg = DataConfig(root=str(root), dataset="toy", load_size=40, crop_size=32)
    loader = data.load_train(cfg, batch_size=1, seed=3)
    state = loader.state_dict()
    first = [x for x, _ in loader.epoch()]
    loader.load_state_dict(state)
    again = [x for x, _ in loader.epoch()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_real_facades_decode_once_at_load_size(data_root):
    cfg = DataConfig(root=str(data_root), dataset="facades", direction="BtoA", load_size=72, crop_size=64,
                     max_images=5)
    loader = data.load_train(cfg, batch_size=1, seed=0)
    assert loader.data.pairs.shape == (5, 6, 72, 72) and loader.data.pairs.dtype == torch.uint8
    assert loader.data.names == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"]
    test = data.load_eval(cfg, "test", max_images=2)
    assert test.pairs.shape == (2, 6, 64, 64)
    labels, photos = test.split(test.pairs.float())
    # BtoA: the input is the label map (few flat colours), the target a photo (many)
    assert len(torch.unique(labels[0].flatten(1), dim=1).T) < len(torch.unique(photos[0].flatten(1), dim=1).T)


def test_a_decoded_split_is_reused_by_the_next_load_until_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    root = make_dataset(tmp_path / "data", n=3, size=32)
    cfg = DataConfig(root=str(root), dataset="toy", direction="BtoA")
    first = data.load_pairs(cfg, "train", 24)
    assert len(list((tmp_path / "cache" / "decoded").glob("toy-train-24-*.pt"))) == 1

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(images, "read_rgb", no_decoding)
    again = data.load_pairs(cfg, "train", 24)  # from the cache: no image is read
    assert torch.equal(again.pairs, first.pairs) and again.names == first.names and again.in_channels == 3
    with pytest.raises(AssertionError, match="decoded"):  # another size, direction or task is another entry
        data.load_pairs(DataConfig(root=str(root), dataset="toy", direction="AtoB"), "train", 24)
    monkeypatch.undo()
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    write_png(torch.zeros(3, 32, 64, dtype=torch.uint8), str(root / "toy" / "train" / "2.png"))  # an edited file
    changed = data.load_pairs(cfg, "train", 24)
    assert changed.pairs[1].sum() == 0 and torch.equal(changed.pairs[0], first.pairs[0])


def test_colorization_input_is_the_grayscale_photo(tmp_path, data_root):
    cfg = DataConfig(root=str(data_root), dataset="facades", direction="BtoA", task="colorization",
                     load_size=32, crop_size=32)
    pairs = data.load_eval(cfg, "test", max_images=2)
    gray, photo = pairs.split(pairs.pairs)
    assert gray.shape == (2, 1, 32, 32) and photo.shape == (2, 3, 32, 32)
    expected = (0.2989 * photo[:, 0:1].float() + 0.587 * photo[:, 1:2].float() + 0.114 * photo[:, 2:3].float())
    assert (gray.float() - expected).abs().max() <= 1.0
    # single-image layout: the whole file is the photo
    folder = tmp_path / "faces" / "train"
    folder.mkdir(parents=True)
    write_jpeg(torch.full((3, 20, 20), 200, dtype=torch.uint8), str(folder / "a.jpg"))
    single = DataConfig(root=str(tmp_path), dataset="faces", task="colorization", layout="single",
                        load_size=16, crop_size=16)
    x, y = next(data.load_train(single, 1, 0).epoch())
    assert x.shape == (1, 1, 16, 16) and y.shape == (1, 3, 16, 16)


def test_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(UserError, match="data.dataset: folder .*nothing not found"):
        data.load_pairs(DataConfig(root=str(tmp_path), dataset="nothing"), "train", 32)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="split 'train' holds no images"):
        data.load_pairs(DataConfig(root=str(tmp_path), dataset="empty"), "train", 32)
    with pytest.raises(UserError, match="split folder not found"):
        data.load_pairs(DataConfig(root=str(tmp_path), dataset="empty"), "val", 32)
    bad = tmp_path / "bad" / "train"
    bad.mkdir(parents=True)
    (bad / "1.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"bad/train/1.jpg: cannot read image"):
        data.load_pairs(DataConfig(root=str(tmp_path), dataset="bad"), "train", 32)
    odd = tmp_path / "odd" / "train"
    odd.mkdir(parents=True)
    write_png(torch.zeros(3, 8, 17, dtype=torch.uint8), str(odd / "1.png"))
    with pytest.raises(UserError, match=r"odd/train/1.png: width 17 is not two halves"):
        data.load_pairs(DataConfig(root=str(tmp_path), dataset="odd"), "train", 32)


def test_data_root_from_environment(tmp_path, monkeypatch):
    make_dataset(tmp_path)
    monkeypatch.setenv("P2P_DATA_ROOT", str(tmp_path))
    assert len(data.load_pairs(DataConfig(dataset="toy"), "train", 16)) == 3

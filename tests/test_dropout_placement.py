"""Where the U-Net's dropout sits: the paper's three innermost decoder blocks (default) or the reference
PyTorch code's ngf*8 blocks one level further out (`model.generator.dropout_at: reference`)."""

import pytest
import torch
import torch.nn as nn

from p2p.errors import UserError
from p2p.models import count_parameters, create_generator
from p2p.models.generators import UNetBlock
from tests.helpers import facades_config


def blocks_by_level(G):
    """The nested U-Net blocks, outermost (level 0) to innermost (level depth - 1)."""
    block, levels = G.model, []
    while block is not None:
        levels.append(block)
        block = next((m for m in block.model.children() if isinstance(m, UNetBlock)), None)
    return levels


def dropout_map(G):
    """{level: (position of the Dropout in its block's Sequential, block length, decoder conv in -> out channels)}."""
    found = {}
    for level, block in enumerate(blocks_by_level(G)):
        children = list(block.model.children())
        drops = [i for i, m in enumerate(children) if isinstance(m, nn.Dropout)]
        assert len(drops) <= 1
        if drops:
            up = [m for m in children if isinstance(m, nn.ConvTranspose2d)][0]
            found[level] = (drops[0], len(children), (up.in_channels, up.out_channels))
    return found


def generator(dropout_at, crop=256, ngf=64):
    return create_generator(facades_config({"model.generator.dropout_at": dropout_at, "data.crop_size": crop,
                                            "data.load_size": crop, "model.generator.ngf": ngf,
                                            "model.discriminator.patch": 16}))


@pytest.mark.slow
def test_paper_placement_is_the_default_and_the_three_innermost_blocks():
    assert facades_config().model.generator.dropout_at == "paper"  # experiments/facades.yaml
    G = generator("paper")
    assert len(blocks_by_level(G)) == 8
    drops = dropout_map(G)
    # Levels 5, 6, 7 = the first three decoder layers (CD512-CD1024-CD1024 of the paper); the innermost block
    # has no norm after its down conv nor a submodule, so its Sequential is shorter.
    assert sorted(drops) == [5, 6, 7]
    assert drops[7] == (5, 6, (512, 512))  # innermost: LeakyReLU, conv, ReLU, deconv, norm, Dropout
    assert drops[6] == drops[5] == (7, 8, (1024, 512))  # after the up-norm, with the skip's doubled input
    assert all(m.p == 0.5 for m in G.modules() if isinstance(m, nn.Dropout))


@pytest.mark.slow
def test_reference_placement_is_one_level_further_out():
    drops = dropout_map(generator("reference"))
    # junyanz/pytorch-CycleGAN-and-pix2pix: `for i in range(num_downs - 5)` ngf*8 blocks with use_dropout,
    # built right after the innermost one, so levels 6, 5, 4 at 256 (num_downs 8); the innermost has none.
    assert sorted(drops) == [4, 5, 6]
    assert all(d == (7, 8, (1024, 512)) for d in drops.values())
    # At the CPU scale (128: num_downs 7, the reference's unet_128) it has two; the paper's rule still three.
    assert sorted(dropout_map(generator("reference", 128, 8))) == [4, 5]
    assert sorted(dropout_map(generator("paper", 128, 8))) == [4, 5, 6]
    assert dropout_map(generator("reference", 32, 8)) == {}  # 5 downsamplings: no ngf*8 block outside the innermost


@pytest.mark.slow
@pytest.mark.parametrize("crop, ngf, expected", [(256, 64, 54_413_955), (128, 32, None)])
def test_parameters_and_initial_weights_are_the_same_either_way(crop, ngf, expected):
    paper, reference = generator("paper", crop, ngf), generator("reference", crop, ngf)
    assert count_parameters(paper) == count_parameters(reference)
    if expected is not None:  # the reference implementation's unet_256 count (tests/test_models.py)
        assert count_parameters(paper) == expected
    a, b = paper.state_dict(), reference.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # the same init stream, the same weights
    x = torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    paper.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(paper(x), reference(x))  # dropout off: the same network
        paper.train(), reference.train()
        torch.manual_seed(1)
        y_paper = paper(x)
        torch.manual_seed(1)
        assert not torch.equal(y_paper, reference(x))  # dropout on, in other places


def test_dropout_at_is_validated():
    G = create_generator(facades_config({"model.generator.arch": "encoder_decoder",
                                         "model.generator.dropout_at": "reference"}))
    assert sorted(dropout_map(G)) == [4, 5, 6]
    with pytest.raises(UserError, match="model.generator.dropout_at' expected one of 'paper', 'reference'"):
        facades_config({"model.generator.dropout_at": "lua"})
    with pytest.raises(UserError, match="model.generator.dropout_at' expected 'paper' for the resnet_9blocks"):
        facades_config({"model.generator.arch": "resnet_9blocks", "model.generator.dropout_at": "reference",
                        "data.crop_size": 64, "data.load_size": 64, "model.discriminator.patch": 16})

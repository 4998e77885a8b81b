"""Parameter counts against the reference implementation, receptive fields measured by gradient."""

import pytest
import torch

from p2p.describe import describe, measure_receptive_field
from p2p.models import count_parameters, create_discriminator, create_generator
from tests.helpers import facades_config


@pytest.mark.slow
def test_paper_parameter_counts_match_reference():
    cfg = facades_config()
    # The reference pix2pix (junyanz/pytorch-CycleGAN-and-pix2pix): unet_256 and basic D at ngf=ndf=64.
    assert count_parameters(create_generator(cfg)) == 54_413_955
    assert count_parameters(create_discriminator(cfg)) == 2_768_705


@pytest.mark.parametrize("patch", [1, 16, pytest.param(70, marks=pytest.mark.slow), pytest.param(286, marks=pytest.mark.slow)])
def test_receptive_field_measured_by_backprop(patch):
    cfg = facades_config({"model.discriminator.patch": patch, "model.discriminator.ndf": 4})
    D = create_discriminator(cfg)
    assert measure_receptive_field(D, in_channels=6) == patch


@pytest.mark.slow
def test_describe_reports_counts_and_output_size():
    info = describe(facades_config({"model.discriminator.patch": 16}))
    assert info["generator_params"] == 54_413_955
    assert info["receptive_field"] == 16
    # 256 -> 128 (one stride-2 layer) -> 127 -> 126 (two 4x4 stride-1 layers)
    assert info["discriminator_output_size"] == [1, 126, 126]


@pytest.mark.parametrize("crop", [32, 64, pytest.param(128, marks=pytest.mark.slow)])
def test_unet_depth_follows_crop(crop):
    cfg = facades_config({"data.crop_size": crop, "data.load_size": crop, "model.generator.ngf": 4,
                          "model.discriminator.patch": 16})
    G = create_generator(cfg)
    assert G.depth == {32: 5, 64: 6, 128: 7}[crop]
    x = torch.randn(2, 3, crop, crop)
    y = G(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0  # tanh output


@pytest.mark.slow
def test_encoder_decoder_is_unet_without_skips():
    unet = create_generator(facades_config())
    ed = create_generator(facades_config({"model.generator.arch": "encoder_decoder"}))
    # Without skips each decoder conv sees half the channels: fewer parameters, same encoder.
    assert count_parameters(ed) < count_parameters(unet)
    enc = lambda net: [m.weight.shape for m in net.modules() if isinstance(m, torch.nn.Conv2d)]  # noqa: E731
    assert enc(ed) == enc(unet)
    # Removed: the skip half of each decoder conv's input, in*out*4*4 per level:
    # 64*3 + 128*64 + 256*128 + 512*256 + 3 * 512*512, times 16 = 15,338,496.
    assert count_parameters(unet) - count_parameters(ed) == 15_338_496


@pytest.mark.slow
def test_dropout_sits_in_the_three_innermost_decoder_blocks():
    G = create_generator(facades_config())
    drops = [m for m in G.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)


@pytest.mark.slow
def test_resnet_generators_and_unconditional_discriminator():
    for arch, blocks in (("resnet_6blocks", 6), ("resnet_9blocks", 9)):
        cfg = facades_config({"model.generator.arch": arch, "data.crop_size": 64, "data.load_size": 64,
                              "model.discriminator.patch": 16})
        G = create_generator(cfg)
        assert G(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
        assert sum(type(m).__name__ == "ResnetBlock" for m in G.modules()) == blocks
    cfg = facades_config({"loss.conditional": False})
    D = create_discriminator(cfg)
    assert D.model[0].in_channels == 3
    assert create_discriminator(facades_config()).model[0].in_channels == 6


@pytest.mark.slow
def test_colorization_generator_takes_one_channel():
    cfg = facades_config({"data.task": "colorization", "data.crop_size": 32, "data.load_size": 32,
                          "model.discriminator.patch": 16})
    G, D = create_generator(cfg), create_discriminator(cfg)
    assert G(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    assert D.model[0].in_channels == 4


@pytest.mark.slow
def test_init_is_normal_002():
    torch.manual_seed(0)
    G = create_generator(facades_config())
    w = torch.cat([m.weight.detach().flatten() for m in G.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.std()) - 0.02) < 5e-4
    assert abs(float(w.mean())) < 1e-4

"""The model registry (p2p.models.registry): every registered network is built, counted and run here.

A new generator registers itself in p2p/models/registry.py and adds its parameter counts below: the
tests that run over the registry fail until it does, so no model goes in untested.
"""

import json
import subprocess
import sys

import pytest
import torch

from p2p.errors import UserError
from p2p.models import count_parameters, create_discriminator, create_generator, geometry, registry
from tests.helpers import ROOT, facades_config

# ngf=4 at a 32x32 crop, 3 -> 3 channels: small enough to build and run every model in the fast tier.
SMALL = {"data.crop_size": 32, "data.load_size": 32, "model.generator.ngf": 4, "model.discriminator.patch": 16,
         "model.discriminator.ndf": 4}
SMALL_COUNTS = {"unet": 65_835, "encoder_decoder": 54_891, "resnet_6blocks": 32_171, "resnet_9blocks": 46_187}
# At the paper's size (ngf=64, 256x256): the U-Net is the reference pix2pix's unet_256 (tests/test_models.py), the
# encoder-decoder the same less its skip halves (54,413,955 - 15,338,496); the ResNets as this code builds them.
PAPER_COUNTS = {"unet": 54_413_955, "encoder_decoder": 39_075_459, "resnet_6blocks": 7_841_411,
                "resnet_9blocks": 11_383_427}
# The PatchGAN at ndf=4 (conditional: 6 input channels) and at the paper's ndf=64, by receptive field.
PATCHGAN_SMALL = {1: 84, 16: 1_045, 70: 11_765, 286: 44_661}
PATCHGAN_PAPER = {1: 9_024, 16: 139_585, 70: 2_768_705, 286: 11_159_361}


def test_the_design_contracts_names_are_registered():
    assert registry.generator_names() == ("unet", "encoder_decoder", "resnet_6blocks", "resnet_9blocks")
    assert registry.discriminator_names() == (registry.PATCHGAN,)
    assert set(SMALL_COUNTS) == set(PAPER_COUNTS) == set(registry.generator_names()), \
        "a registered generator needs its parameter counts in tests/test_registry.py"


@pytest.mark.parametrize("name", registry.generator_names())
def test_every_generator_builds_counts_and_runs(name):
    G = create_generator(facades_config({**SMALL, "model.generator.arch": name}))
    assert count_parameters(G) == SMALL_COUNTS[name]
    x = torch.randn(2, 3, 32, 32)
    y = G(x)
    assert y.shape == x.shape and y.abs().max() <= 1.0  # tanh output, the input's size


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.generator_names())
def test_every_generator_at_the_papers_size(name):
    assert count_parameters(create_generator(facades_config({"model.generator.arch": name}))) == PAPER_COUNTS[name]


@pytest.mark.parametrize("patch", list(PATCHGAN_SMALL))
def test_the_patchgan_builds_counts_and_runs(patch):
    cfg = facades_config({"model.discriminator.patch": patch, "model.discriminator.ndf": 4})
    D = create_discriminator(cfg)
    assert count_parameters(D) == PATCHGAN_SMALL[patch]
    layers = cfg.model.discriminator.layers
    size = max(64, geometry.min_crop_for_discriminator(layers))
    side = geometry.patch_output_size(size, layers)
    assert D(torch.randn(2, 6, size, size)).shape == (2, 1, side, side)


@pytest.mark.slow
@pytest.mark.parametrize("patch", list(PATCHGAN_PAPER))
def test_the_patchgan_at_the_papers_size(patch):
    assert count_parameters(create_discriminator(facades_config({"model.discriminator.patch": patch}))) == \
        PATCHGAN_PAPER[patch]


@pytest.mark.parametrize("name", registry.generator_names())
def test_the_crop_facts_match_what_the_network_takes(name):
    """The smallest crop the registered facts allow builds and runs; the config refuses one that breaks them."""
    spec = registry.generator(name)
    crop = next(c for c in range(16, 1024) if geometry.generator_crop_problem(name, c) is None)  # the schema's least: 16
    over = {**SMALL, "model.generator.arch": name, "data.crop_size": crop, "data.load_size": crop, "loss.gan": "none"}
    G = create_generator(facades_config(over))
    assert G(torch.randn(1, 3, crop, crop)).shape == (1, 3, crop, crop)
    bad = crop + 2  # not a power of two, not a multiple of 4
    with pytest.raises(UserError, match=f"data.crop_size' expected {spec.crop_rule()} for the {name} generator"):
        facades_config({**over, "data.crop_size": bad, "data.load_size": bad})


def test_an_unknown_name_is_one_line_naming_the_registered_ones():
    with pytest.raises(UserError) as bad:
        facades_config({"model.generator.arch": "vit"})
    message = str(bad.value)
    assert "\n" not in message and "model.generator.arch" in message and "'vit'" in message
    assert all(repr(name) in message for name in registry.generator_names())
    with pytest.raises(registry.UnknownModel, match="unknown generator 'vit' .*'resnet_9blocks'"):
        registry.generator("vit")


def test_a_newly_registered_generator_is_accepted_and_built(monkeypatch):
    """What adding a model takes: one decorated builder. The config accepts the name, the factory builds it."""
    monkeypatch.setattr(registry, "GENERATORS", dict(registry.GENERATORS))

    @registry.register_generator("tiny_conv", crop_multiple=1, description="one 3x3 convolution (a test)")
    def tiny_conv(g, in_channels, out_channels, crop):
        return torch.nn.Sequential(torch.nn.Conv2d(in_channels, out_channels, 3, padding=1), torch.nn.Tanh())

    cfg = facades_config({**SMALL, "model.generator.arch": "tiny_conv", "data.crop_size": 30, "data.load_size": 30})
    G = create_generator(cfg)
    assert count_parameters(G) == 3 * 3 * 3 * 3 + 3
    assert G(torch.randn(1, 3, 30, 30)).shape == (1, 3, 30, 30)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_generator("tiny_conv", description="again")(tiny_conv)
    with pytest.raises(UserError, match="dropout_at' expected 'paper' for the tiny_conv generator"):
        facades_config({**SMALL, "model.generator.arch": "tiny_conv", "model.generator.dropout_at": "reference"})


def p2p_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p2p", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_list_models_prints_every_registered_one_without_torch():
    proc = p2p_cli("describe", "--list-models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for spec in registry.GENERATORS.values():
        assert any(line.split()[:1] == [spec.name] and spec.description in line for line in lines), spec.name
    assert any(line.split()[:1] == [registry.PATCHGAN] for line in lines)
    listed = json.loads(p2p_cli("describe", "--list-models", "--json").stdout)
    assert [m["name"] for m in listed["generators"]] == list(registry.generator_names())
    # the registry and the config schema stay free of torch (a sweep's driver checks configs without it)
    probe = "import sys, p2p.config, p2p.describe; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout.strip() == "False"


def test_describe_without_a_config_or_list_is_a_one_line_error():
    proc = p2p_cli("describe")
    assert proc.returncode == 2 and proc.stderr.startswith("p2p: error: ") and len(proc.stderr.splitlines()) == 1

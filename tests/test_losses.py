"""Losses and tricks: each does what it must, checked against closed forms and frequencies."""

import math

import pytest
import torch

from p2p import losses
from p2p.optimizers import lr_factor


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_gan_losses_closed_forms():
    zero = torch.zeros(2, 1, 4, 4)
    assert losses.gan_loss(zero, 1.0, "vanilla").item() == pytest.approx(math.log(2))
    logits = torch.tensor([2.0, -1.0])
    # non-saturating G loss: -log sigmoid(x) = softplus(-x)
    expected = torch.nn.functional.softplus(-logits).mean().item()
    assert losses.generator_gan_loss(logits, "vanilla").item() == pytest.approx(expected)
    assert losses.generator_gan_loss(logits, "lsgan").item() == pytest.approx(((1.0 ** 2) + (2.0 ** 2)) / 2)
    assert losses.gan_loss(logits, 0.0, "lsgan").item() == pytest.approx((4 + 1) / 2)
    with pytest.raises(ValueError):
        losses.gan_loss(logits, 1.0, "wgan")


def test_l1_loss():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert losses.l1_loss(a, b).item() == pytest.approx(0.5)


def test_label_smoothing_draws_real_targets_from_the_range():
    t = losses.real_targets(torch.Size([100, 1, 30, 30]), (0.8, 1.2), rng())
    assert t.min() >= 0.8 and t.max() <= 1.2
    assert t.mean().item() == pytest.approx(1.0, abs=0.005)
    assert t.std().item() == pytest.approx(0.4 / math.sqrt(12), abs=0.005)  # uniform
    assert torch.equal(losses.real_targets(torch.Size([3]), None, rng()), torch.ones(3))
    # one-sided: only real targets move; fake targets stay 0
    real, fake = losses.discriminator_loss(torch.zeros(3), torch.zeros(3), "lsgan", torch.full((3,), 0.9), False)
    assert real.item() == pytest.approx(0.81) and fake.item() == 0.0


def test_label_flip_swaps_targets_with_its_probability():
    g = rng()
    flips = sum(losses.flip_labels(0.3, g) for _ in range(20000))
    assert flips / 20000 == pytest.approx(0.3, abs=0.01)
    assert not any(losses.flip_labels(0.0, g) for _ in range(100))
    real_logits, fake_logits = torch.full((4,), 3.0), torch.full((4,), -3.0)
    ones = torch.ones(4)
    normal = losses.discriminator_loss(real_logits, fake_logits, "vanilla", ones, flipped=False)
    swapped = losses.discriminator_loss(real_logits, fake_logits, "vanilla", ones, flipped=True)
    assert normal[0].item() < 0.1 and normal[1].item() < 0.1  # D is right on both
    assert swapped[0].item() > 3.0 and swapped[1].item() > 3.0  # ... and wrong once flipped


def test_instance_noise_decays_linearly_to_zero():
    assert losses.instance_noise_std(0.1, 0, 10) == pytest.approx(0.1)
    assert losses.instance_noise_std(0.1, 5, 10) == pytest.approx(0.05)
    assert losses.instance_noise_std(0.1, 10, 10) == 0.0
    assert losses.instance_noise_std(0.1, 12, 10) == 0.0
    assert losses.instance_noise_std(0.0, 0, 10) == 0.0
    x = torch.zeros(64, 3, 32, 32)
    noisy = losses.add_instance_noise(x, 0.2, rng())
    assert noisy.std().item() == pytest.approx(0.2, rel=0.02)
    assert losses.add_instance_noise(x, 0.0, rng()) is x


def test_image_pool_mixes_history_with_new_fakes():
    assert torch.equal(losses.ImagePool(0).query(torch.ones(2, 3, 4, 4), rng()), torch.ones(2, 3, 4, 4))
    pool, g = losses.ImagePool(4), rng()
    first = [torch.full((1, 1, 2, 2), float(i)) for i in range(4)]
    for image in first:  # filling: each image comes straight back
        assert torch.equal(pool.query(image, g), image)
    returned_old = 0
    for i in range(4, 404):
        out = pool.query(torch.full((1, 1, 2, 2), float(i)), g)
        returned_old += int(out[0, 0, 0, 0].item() != i)
        assert len(pool.images) == 4
    assert returned_old / 400 == pytest.approx(0.5, abs=0.08)  # half the time an older fake
    state = pool.state_dict()
    other = losses.ImagePool(4)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(other.images, pool.images))


def test_linear_decay_schedule():
    # 2 constant epochs then 3 decaying: 1, 1, 3/4, 2/4, 1/4 (the reference's rule)
    assert [lr_factor(e, 2, 3) for e in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.25]

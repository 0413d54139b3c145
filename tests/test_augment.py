"""Augmentation and input normalisation (``trainer.augment``, ``dataset.normalize``): crop offsets
uniform over their range, flips half the time, labels untouched, the same draws for the same seed,
and the training split's per-channel statistics."""

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import tdgs.step
from tdgs.data.augment import crop_padding, random_crop_flip
from tdgs.data.inputs import Inputs, channel_stats
from tdgs.model import PoolingCNN
from tdgs.optim import make_optimizer
from tdgs.step import TrainStep

SIDE = 12


def _coded(batch, side=SIDE):
    """Float images whose pixel (r, c) holds 1000 + 100 r + c in every channel: positions read back."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (1000 + 100 * rows + cols).float().expand(batch, 2, side, side).contiguous()


def _draws(out, padding):
    """(row offset, column offset, mirrored) of each augmented image of :func:`_coded`: the pixel at
    (p, p) comes from (dy, dx) unmirrored, (dy, dx + side - 1 - 2p) mirrored (offsets in 0..2p)."""
    corner = out[:, 0, padding, padding]  # inside the image whatever the offset
    mirrored = out[:, 0, padding, padding + 1] < corner
    dy = ((corner - 1000) // 100).long()
    col = ((corner - 1000) % 100).long()
    dx = torch.where(mirrored, col - (SIDE - 1 - 2 * padding), col)
    return dy, dx, mirrored


@pytest.mark.parametrize("padding", [2, 4])
def test_crop_offsets_are_uniform_over_their_range(padding):
    torch.manual_seed(0)
    dy, dx, mirrored = _draws(random_crop_flip(_coded(4000), padding, flip=False), padding)
    assert not mirrored.any()
    for offsets in (dy, dx):
        observed = torch.bincount(offsets, minlength=2 * padding + 1)
        assert len(observed) == 2 * padding + 1  # nothing outside 0..2p
        assert stats.chisquare(observed.numpy()).pvalue > 0.01, observed
    assert stats.pearsonr(dy.numpy(), dx.numpy()).pvalue > 0.01  # drawn independently


def test_flips_happen_half_the_time_and_keep_the_crop_law():
    torch.manual_seed(1)
    dy, dx, mirrored = _draws(random_crop_flip(_coded(4000), 2, flip=True), 2)
    assert stats.binomtest(int(mirrored.sum()), 4000, 0.5).pvalue > 0.01
    for offsets in (dy[mirrored], dx[mirrored], dx[~mirrored]):
        assert stats.chisquare(torch.bincount(offsets, minlength=5).numpy()).pvalue > 0.01


def test_an_augmented_image_is_its_shifted_and_mirrored_original():
    torch.manual_seed(2)
    images = torch.randint(0, 256, (64, 3, SIDE, SIDE), dtype=torch.uint8)
    torch.manual_seed(3)
    out = random_crop_flip(images, 2, flip=True)
    torch.manual_seed(3)
    dy, dx, mirrored = _draws(random_crop_flip(_coded(64), 2, flip=True), 2)
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(64):
        expected = padded[i, :, dy[i] : dy[i] + SIDE, dx[i] : dx[i] + SIDE]
        assert torch.equal(out[i], expected.flip(-1) if mirrored[i] else expected)
    assert out.dtype == torch.uint8 and out.is_contiguous()


def test_the_padding_follows_the_image_size():
    assert (crop_padding(32), crop_padding(28), crop_padding(8)) == (4, 2, 2)


def test_the_training_step_augments_the_images_not_the_labels(monkeypatch):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (128,))
    seen = []
    real = F.cross_entropy
    monkeypatch.setattr(
        tdgs.step.F, "cross_entropy", lambda logits, y, **kw: seen.append(y.clone()) or real(logits, y, **kw)
    )
    model = PoolingCNN("max", (1, 28, 28), 10)
    inputs = []
    model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    step = TrainStep(
        model, make_optimizer(model.parameters(), lr=1e-3, device=torch.device("cpu"), mode="none"), images, labels,
        batch_size=64, precision="32", mode="none", device=torch.device("cpu"), inputs=Inputs(augment="flip_crop"),
    )  # fmt: skip
    index = torch.randperm(128)[:64]
    step(index)
    step(index)
    assert all(torch.equal(y, labels[index]) for y in seen)  # the batch's own labels, in order
    plain = images[index].float() / 255
    assert not torch.equal(inputs[0], plain) and not torch.equal(inputs[0], inputs[1])  # drawn anew each step
    assert inputs[0].sum(0).gt(0).any() and inputs[0].shape == plain.shape


def test_the_same_seed_draws_the_same_augmentation():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(7)
    first = Inputs(augment="flip_crop", side=32)(images, training=True)
    torch.manual_seed(7)
    assert torch.equal(first, Inputs(augment="flip_crop", side=32)(images, training=True))
    assert torch.equal(Inputs(augment="flip_crop")(images, training=False), images.float() / 255)  # not in evaluation


def test_normalisation_uses_the_training_splits_channel_statistics():
    torch.manual_seed(0)
    images = (torch.rand(300, 3, 8, 8) * torch.tensor([50.0, 150.0, 250.0]).view(1, 3, 1, 1)).to(torch.uint8)
    mean, std = channel_stats(images, chunk=64)  # over chunks: the same as at once
    scaled = images.double() / 255
    assert torch.allclose(mean.double(), scaled.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), scaled.std((0, 2, 3), unbiased=False), atol=1e-6)
    out = Inputs(mean=mean, std=std)(images, training=False)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_an_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augment must be one of 'none', 'crop', 'flip_crop', but got 'mixup'"):
        Inputs(augment="mixup")

"""The validation split (``dataset.val_size``, ``dataset.split_seed``): held out of the training
images, stratified by class to within one image of each class's share, the same images for every
run of a split seed, no image in two splits, and bad sizes refused in one line."""

import numpy as np
import pytest
import torch
from scipy import stats

from tdgs.data import load_dataset
from tdgs.data.splits import Splits, hold_out, stratified_counts, validation_count
from tdgs.errors import ConfigError


def _splits(labels, seed=0):
    """Splits whose training image i is filled with the value i (mod 256 in two bytes), so indices can be read back."""
    labels = torch.as_tensor(labels)
    index = torch.arange(len(labels))
    images = torch.stack([index % 256, index // 256], 1).to(torch.uint8).view(-1, 2, 1, 1).expand(-1, 2, 4, 4)
    test = torch.zeros(3, 2, 4, 4, dtype=torch.uint8)
    return Splits("toy", images.contiguous(), labels, test, torch.zeros(3, dtype=torch.long), int(labels.max()) + 1)


def _indices(images):
    """The training indices the images of :func:`_splits` were."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


@pytest.mark.parametrize("val_size", [0.1, 0.25, 137, 0.5])
def test_no_image_sits_in_two_splits_and_classes_keep_their_proportions(val_size):
    generator = torch.Generator().manual_seed(1)
    labels = torch.multinomial(torch.tensor([0.4, 0.3, 0.2, 0.07, 0.03]), 997, True, generator=generator)
    splits = hold_out(_splits(labels), val_size, split_seed=3)
    train, val = _indices(splits.train_images), _indices(splits.val_images)
    assert not set(train) & set(val) and sorted(train + val) == list(range(997))  # every image once
    assert train == sorted(train) and val == sorted(val)  # the original order kept
    assert torch.equal(splits.train_labels, labels[train]) and torch.equal(splits.val_labels, labels[val])
    total = validation_count(val_size, 997)
    assert len(val) == total
    share = torch.bincount(labels, minlength=5).double() * total / 997  # each class's exact share
    held = torch.bincount(splits.val_labels, minlength=5).double()
    assert ((held - share).abs() < 1).all(), (held, share)


def test_the_split_depends_on_the_split_seed_only():
    labels = torch.arange(600) % 6
    first, again = hold_out(_splits(labels), 0.2, split_seed=0), hold_out(_splits(labels), 0.2, split_seed=0)
    torch.manual_seed(123)  # the run's seed does not enter
    assert (
        _indices(first.val_images) == _indices(again.val_images) == _indices(hold_out(_splits(labels), 0.2).val_images)
    )
    other = hold_out(_splits(labels), 0.2, split_seed=1)
    assert _indices(other.val_images) != _indices(first.val_images)


def test_the_held_out_images_of_a_class_are_a_uniform_draw():
    """Over split seeds each image of a class is held out with the same probability (chi-square)."""
    labels = torch.arange(40) % 2  # 20 images per class, 5 held out of each
    counts = np.zeros(40)
    for seed in range(400):
        counts[_indices(hold_out(_splits(labels), 10, split_seed=seed).val_images)] += 1
    for label in (0, 1):
        observed = counts[label::2]
        assert stats.chisquare(observed).pvalue > 0.01, observed


def test_largest_remainders_fill_the_count():
    labels = torch.tensor([0] * 9 + [1] * 9 + [2] * 2)
    assert stratified_counts(labels, 5, 3).tolist() == [2, 2, 1]  # shares 2.25, 2.25, 0.5
    assert stratified_counts(labels, 0, 3).tolist() == [0, 0, 0]


def test_val_size_zero_is_the_whole_training_set():
    splits = _splits(torch.arange(50) % 5)
    assert hold_out(splits, 0) is splits and len(splits.val_labels) == 0
    assert splits.val_images.shape == (0, 2, 4, 4)


def test_digits_validation_comes_out_of_its_training_part():
    whole, held = load_dataset("digits", val_size=0), load_dataset("digits", val_size=0.1)
    assert torch.equal(held.test_images, whole.test_images)  # the test part is untouched
    assert len(held.train_labels) + len(held.val_labels) == len(whole.train_labels) == 1437
    assert len(held.val_labels) == 144
    pool = {tuple(image.flatten().tolist()) for image in whole.train_images}
    assert all(tuple(image.flatten().tolist()) in pool for image in held.val_images)


def test_a_fraction_rounds_halves_up_and_never_to_no_image():
    assert [validation_count(0.1, n) for n in (25, 35, 44, 1437)] == [3, 4, 4, 144]
    assert validation_count(0.01, 50) == 1  # 0.5 image: one


BAD = [
    (0.0003, "dataset.val_size=0.0003 holds out 0 of the 50 training images; use 0 (none) or at least 0.02"),
    (1.5, "dataset.val_size must be a fraction in [0, 1) or a whole number of images, but got 1.5"),
    (-0.1, "dataset.val_size must be a fraction in [0, 1) or a whole number of images, but got -0.1"),
    (50, "dataset.val_size=50 images, but the training set has only 50; hold out fewer"),
    (45, "dataset.val_size=45 leaves class 4 without training images (1 images, 1 held out); hold out fewer"),
]


@pytest.mark.parametrize("val_size,message", BAD, ids=[str(v) for v, _ in BAD])
def test_bad_sizes_are_refused_in_one_line(val_size, message):
    labels = torch.tensor([0] * 13 + [1] * 12 + [2] * 12 + [3] * 12 + [4])  # one image of class 4
    with pytest.raises(ConfigError) as error:
        hold_out(_splits(labels), val_size)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)

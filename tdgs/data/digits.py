"""scikit-learn's bundled handwritten digits (the test part of UCI's optdigits: 1,797 real 8x8
images, 10 classes), upsampled to 28x28: the embedded, offline default dataset."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .splits import Splits

SIZE = 28  # upsampled side, MNIST's geometry
TEST_FRACTION = 0.2


def load_digits(*, seed: int = 0) -> Splits:
    """The digits, bilinearly upsampled 8x8 -> 28x28, split 80/20 stratified by class with ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
    large = F.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = (large.clamp(0, 1) * 255).round().to(torch.uint8)  # (1797, 1, 28, 28)
    labels = torch.from_numpy(bunch.target).long()
    train, test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=bunch.target, random_state=seed
    )
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    return Splits("digits", images[train], labels[train], images[test], labels[test], 10)

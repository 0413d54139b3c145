"""gradcheck in float64 wherever the pooler is a deterministic function of its inputs: max, avg,
mixed, gated, every evaluation mode, S3 with its draw fixed, TDGS soft samples with fixed noise."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from tdgs.pooling import (
    gated_pool2d,
    mixed_pool2d,
    s3_pool2d,
    stochastic_pool2d,
    tdgs_pool2d,
)
from tdgs.pooling.tdgs import NORMALIZATIONS, gumbel_noise


def _input(shape=(2, 3, 6, 6)):
    # positive and well separated, so no max ties and no kinks inside the finite-difference step
    return (torch.rand(shape, dtype=torch.float64) + 0.1).requires_grad_()


def _param(*shape):
    return torch.randn(shape, dtype=torch.float64).requires_grad_()


CASES = {
    "max": lambda: (lambda x: F.max_pool2d(x, 2, 2), (_input(),)),
    "avg": lambda: (lambda x: F.avg_pool2d(x, 2, 2), (_input(),)),
    "mixed-channel": lambda: (mixed_pool2d, (_input(), _param(3))),
    "mixed-layer": lambda: (mixed_pool2d, (_input(), _param(1))),
    "gated-channel": lambda: (gated_pool2d, (_input(), _param(3, 4), _param(3))),
    "gated-layer": lambda: (gated_pool2d, (_input(), _param(1, 4), _param(1))),
    "stochastic-eval": lambda: (lambda x: stochastic_pool2d(x, training=False), (_input(),)),
    "s3-eval": lambda: (lambda x: s3_pool2d(x, training=False), (_input((2, 3, 9, 9)),)),
    # the draw is reseeded on every call, so S3 training is a fixed selection of the max map
    "s3-train-fixed-draw": lambda: (
        lambda x: (torch.manual_seed(3), s3_pool2d(x, training=True))[1],
        (_input((2, 3, 9, 9)),),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck(case):
    fn, inputs = CASES[case]()
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("mode", ["expectation", "argmax", "soft-sample-fixed-noise"])
@pytest.mark.parametrize("t_shape", [(3, 3, 3), (3, 1, 1), (1, 1, 1)], ids=["position", "channel", "layer"])
def test_gradcheck_tdgs(normalize, mode, t_shape):
    x = _input()
    temperature = (torch.rand(t_shape, dtype=torch.float64) + 0.5).requires_grad_()
    if mode == "soft-sample-fixed-noise":
        noise = gumbel_noise((2, 3, 3, 3, 4), dtype=torch.float64)

        def fn(x, t):
            return tdgs_pool2d(x, t, normalize=normalize, hard=False, gumbels=noise)
    else:

        def fn(x, t):
            return tdgs_pool2d(x, t, normalize=normalize, eval_mode=mode, training=False)

    assert gradcheck(fn, (x, temperature))

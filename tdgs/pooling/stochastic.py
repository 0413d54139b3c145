"""Stochastic pooling (Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep
Convolutional Neural Networks", ICLR 2013, arXiv:1301.3557)."""

from __future__ import annotations

import torch

from . import backend, ops
from .base import Pool2d
from .checks import check_input
from .windows import normalized_windows, windows


def stochastic_pool2d(
    x: torch.Tensor,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
    training: bool = True,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Training: output ``a_l`` with ``l ~ Categorical(p)``, ``p_i = a_i / sum(a)``; evaluation: the
    probability-weighted average ``sum(p_i a_i)``.

    Negative values count as 0 when forming ``p``; a window whose sum is 0 outputs 0 in both modes.
    In training the gradient flows only to the sampled element. Padded positions weigh 0, as a 0
    does: never picked, no weight.

    ``uniforms``: the U[0, 1) number of each window, shape (B, C, Ho, Wo), to fix the draw; given
    ones always run the pure-PyTorch reference code (otherwise the C++ or Triton kernel runs where
    :mod:`tdgs.pooling.backend` says; :func:`kernel_uniforms` rebuilds its stream).

    Shape: (B, C, H, W) -> (B, C, Ho, Wo).
    """
    check_input(x, kernel_size, stride, padding)
    kernels = backend.kernels_for(x, kernel_size=kernel_size) if uniforms is None else None
    if kernels is not None:
        seed = backend.draw_seed(x.device) if training else ops.no_seed(x.device)
        return ops.apply(ops.STOCHASTIC, kernels, x, seed, kernel_size, stride, padding, training)
    a = windows(x, kernel_size, stride, padding)  # (B, C, Ho, Wo, k*k), padded positions 0
    weight = a.clamp_min(0)  # (B, C, Ho, Wo, k*k), unnormalised p
    if not training:
        p = normalized_windows(weight, "l1")  # (B, C, Ho, Wo, k*k); overflow-safe, 0 on a zero window
        return (p * a).sum(-1)
    cdf = weight.detach().cumsum(-1)  # (B, C, Ho, Wo, k*k)
    total = cdf[..., -1:]  # (B, C, Ho, Wo, 1)
    if uniforms is None:
        backend.refuse_lowering_samples("stochastic_pool2d")
        uniforms = torch.rand(total.shape[:-1], dtype=total.dtype, device=total.device)  # in [0, 1)
    u = uniforms.unsqueeze(-1)  # (B, C, Ho, Wo, 1)
    # inverse CDF: the first i with cdf_i > u * total; elements of weight 0 are never picked
    index = (cdf <= u * total).sum(-1, keepdim=True).clamp_max(a.shape[-1] - 1)  # (B, C, Ho, Wo, 1)
    picked = a.gather(-1, index)  # (B, C, Ho, Wo, 1)
    return torch.where(total > 0, picked, 0).squeeze(-1)


def kernel_uniforms(seed: torch.Tensor, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The uniforms the kernels use for key ``seed`` and output shape (B, C, Ho, Wo)."""
    kernels = backend.module(backend.kernels_for(torch.empty((1, 1, 1, 1), dtype=dtype, device=seed.device)))
    return kernels.window_uniforms(seed, int(torch.Size(shape).numel()), 1, dtype).view(*shape)


class StochasticPool(Pool2d):
    """See :func:`stochastic_pool2d`. Nothing to learn."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        return stochastic_pool2d(x, **self.window, training=self.training)

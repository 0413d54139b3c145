"""S3Pool, the deck's "SP3" (Zhai et al., "S3Pool: Pooling with Stochastic Spatial Sampling",
CVPR 2017, arXiv:1611.05138)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backend, ops
from .base import Pool2d
from .checks import check_input, check_positive_int
from .windows import pooled_size


def sampled_lines(size: int, count: int, grid_size: int, per_block: int, device=None) -> torch.Tensor:
    """Indices of the ``count`` rows (or columns) S3Pool keeps from a map of ``size`` lines.

    The map is cut into blocks of ``grid_size`` lines; each block gives ``per_block`` distinct lines
    drawn uniformly without replacement, until ``count`` are reached (a last partial block gives just
    those still needed). Returned sorted, shape (count,).
    """
    blocks = -(-size // grid_size)
    starts = torch.arange(blocks, device=device) * grid_size  # (blocks,)
    lines = starts[:, None] + torch.arange(grid_size, device=device)  # (blocks, grid_size)
    keys = torch.rand(lines.shape, device=device).masked_fill_(lines >= size, 2.0)  # past the map: never drawn
    drawn = lines.gather(1, keys.argsort(dim=1)[:, :per_block])  # (blocks, per_block), in random order
    # per_block from each block until count is reached, never more than a block holds
    wanted = (count - torch.arange(blocks, device=device) * per_block).clamp(0, per_block)
    take = torch.minimum(wanted, size - starts)  # (blocks,)
    keep = torch.arange(per_block, device=device) < take[:, None]  # (blocks, per_block), a prefix per row
    drawn = drawn.masked_fill(~keep, size).sort(dim=1).values  # kept lines first, ascending
    return drawn[keep]  # (count,)


def check_s3_geometry(kernel_size: int, stride: int, grid_size: int) -> int:
    """S3Pool's constraints: ``grid_size`` a multiple of ``stride``, ``stride <= kernel_size``."""
    check_positive_int("grid_size", grid_size)
    if grid_size < stride or grid_size % stride:
        raise ValueError(f"grid_size must be a multiple of stride={stride}, but got {grid_size}")
    if stride > kernel_size:
        raise ValueError(f"s3 needs stride <= kernel_size={kernel_size}, but got stride={stride}")
    return grid_size


def s3_pool2d(
    x: torch.Tensor,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
    grid_size: int = 4,
    training: bool = True,
    lines: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """S3Pool: a stride-1 max pooling, then stochastic spatial downsampling.

    Step 1: ``k x k`` max pooling with stride 1, padded at the right/bottom edge so the map keeps
    size ``H x W``. Step 2 (training): in every ``grid_size x grid_size`` block draw
    ``grid_size / stride`` rows and columns without replacement; output the map at their
    intersections. The draw is shared by the whole batch and all channels. Evaluation: average
    pooling (window ``stride``, stride ``stride``) of the step-1 map, cropped to the output size.
    With ``padding`` ``p``, windows may also start in ``p`` lines of ``-inf`` above and left of the
    input (never picked): the map has ``(H + p) x (W + p)`` positions, each window holding at least
    one input element, and evaluation averages over the map positions there are.

    ``lines``: the (rows, cols) to keep in training, to fix the draw; given ones always run the
    pure-PyTorch reference code (otherwise the C++ or Triton kernel runs where
    :mod:`tdgs.pooling.backend` says, drawing from its own stream; :func:`kernel_lines` rebuilds it).

    Shape: (B, C, H, W) -> (B, C, Ho, Wo), ``Ho = floor((H + 2p - k) / s) + 1``.
    """
    check_s3_geometry(kernel_size, stride, grid_size)
    out_h, out_w = check_input(x, kernel_size, stride, padding)
    kernels = backend.kernels_for(x, kernel_size=kernel_size) if lines is None else None
    if kernels is not None:
        seed = backend.draw_seed(x.device) if training else ops.no_seed(x.device)
        return ops.apply(ops.S3, kernels, x, seed, kernel_size, stride, padding, grid_size, training)
    x = F.pad(x, (padding, 0, padding, 0), value=float("-inf")) if padding else x  # (B, C, H + p, W + p)
    height, width = x.shape[-2:]
    padded = F.pad(x, (0, kernel_size - 1, 0, kernel_size - 1), value=float("-inf"))
    peaks = F.max_pool2d(padded, kernel_size, stride=1)  # (B, C, H + p, W + p)
    if not training:  # ceil_mode: a last block that the map cuts short averages what it holds
        return F.avg_pool2d(peaks, stride, stride, ceil_mode=True)[..., :out_h, :out_w]  # (B, C, Ho, Wo)
    if lines is None:
        backend.refuse_lowering_samples("s3_pool2d")
        per_block = grid_size // stride
        lines = (
            sampled_lines(height, out_h, grid_size, per_block, x.device),  # (Ho,)
            sampled_lines(width, out_w, grid_size, per_block, x.device),  # (Wo,)
        )
    rows, cols = lines
    return peaks.index_select(2, rows).index_select(3, cols)  # (B, C, Ho, Wo)


def kernel_lines(
    seed: torch.Tensor,
    height: int,
    width: int,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
    grid_size: int = 4,
):
    """The (rows, cols) of the (H + p) x (W + p) map that the kernels keep for key ``seed`` on an ``height x
    width`` input."""
    out_h, out_w = pooled_size(height, width, kernel_size, stride, padding)
    kernels = backend.module(backend.kernels_for(torch.empty((1, 1, 1, 1), device=seed.device)))
    per_block = grid_size // stride
    return (
        kernels.s3_lines(seed, height + padding, out_h, grid_size, per_block, 0),
        kernels.s3_lines(seed, width + padding, out_w, grid_size, per_block, 1),
    )


class S3Pool(Pool2d):
    """See :func:`s3_pool2d`. Nothing to learn.

    Args:
        grid_size: block side ``g``; a multiple of ``stride`` (default 4).
        window: ``kernel_size``, ``stride``, ``padding`` (see :class:`~tdgs.pooling.base.Pool2d`).
    """

    def __init__(self, channels: int | None = None, *, grid_size: int = 4, **window) -> None:
        super().__init__(channels, **window)
        self.grid_size = check_s3_geometry(self.kernel_size, self.stride, grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        return s3_pool2d(x, **self.window, grid_size=self.grid_size, training=self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid_size={self.grid_size}"

"""TDGS: Temperature Driven Gumbel-Softmax pooling (Bredariol, the project's slide deck;
docs/design.md). A learnable temperature ``T`` sets, per location, how close the pick of a window value
is to max pooling (``T -> 0``) or to a uniform random pick (``T -> inf``). Sampling uses the
Gumbel-max trick with the straight-through Gumbel-softmax gradient (Jang, Gu & Poole, ICLR 2017,
arXiv:1611.01144; Maddison, Mnih & Teh, ICLR 2017, arXiv:1611.00712)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import backend, ops
from .base import LazyChannels, Pool2d
from .checks import check_bool, check_choice, check_input, check_positive_float, check_positive_int
from .windows import NORMALIZATIONS, normalized_windows, padded_positions, pooled_size, windows

EVAL_MODES = ("expectation", "sample", "argmax")
GRANULARITIES = ("position", "channel", "layer")
RECTIFIERS = ("relu", "softplus")


def rectified_temperature(theta: torch.Tensor, rectifier: str, eps: float) -> torch.Tensor:
    """``T = relu(theta) + eps`` (or ``softplus(theta) + eps``): strictly positive for any ``theta``."""
    return (F.relu(theta) if rectifier == "relu" else F.softplus(theta)) + eps


def gumbel_noise(shape: Sequence[int], *, dtype: torch.dtype, device=None) -> torch.Tensor:
    """iid Gumbel(0, 1) samples ``-log(-log(u))``, ``u`` in the open interval (0, 1): always finite."""
    u = torch.rand(shape, dtype=dtype, device=device)  # [0, 1)
    return -torch.log(-torch.log(u.clamp_min_(torch.finfo(dtype).tiny)))


def check_options(normalize: str, hard: bool, eval_mode: str, rectifier: str | None, eps: float) -> None:
    """The options :func:`tdgs_pool2d` and :class:`TDGSPool` share: a one-line ValueError each."""
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_bool("hard", hard)
    check_choice("eval_mode", eval_mode, EVAL_MODES)
    if rectifier is not None:
        check_choice("rectifier", rectifier, RECTIFIERS)
    elif eps:  # T is the temperature given: the kernels would add eps to it, the reference would not
        raise ValueError(
            f"eps is added to a rectified temperature only: give a rectifier or eps=0, but got eps={eps!r}"
        )


def tdgs_pool2d(
    x: torch.Tensor,
    temperature: torch.Tensor,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
    normalize: str = "l2",
    hard: bool = True,
    eval_mode: str = "expectation",
    training: bool = True,
    gumbels: torch.Tensor | None = None,
    rectifier: str | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """TDGS pooling with logits ``z = normalize(a) / T`` over each window ``a``.

    Training (and ``eval_mode="sample"``): ``hard=True`` outputs ``a_{i*}``, ``i* = argmax(z + g)``
    with Gumbel noise ``g``, and back-propagates as ``sum(a * y)``, ``y = softmax(z + g)``
    (straight-through, as ``F.gumbel_softmax(z, tau=1, hard=True)``); ``hard=False`` outputs
    ``sum(a * y)``. Evaluation: ``expectation`` gives ``sum(a * softmax(z))``, ``argmax`` gives
    ``a_{argmax z}``.

    Args:
        x: input, shape (B, C, H, W).
        temperature: ``T > 0``, broadcastable to (C, Ho, Wo); or, with ``rectifier``, the raw
            parameter ``theta`` of ``T = rectifier(theta) + eps`` (``"relu"`` or ``"softplus"``),
            which the kernels then compute themselves (:class:`TDGSPool` does this: no separate
            launches for ``T`` and its gradient on a GPU). ``eps`` needs a ``rectifier``.
        gumbels: the Gumbel noise to use, shape (B, C, Ho, Wo, k*k); drawn when ``None``. Given
            noise always runs the pure-PyTorch reference code; without it the C++ or Triton kernel
            runs where :mod:`tdgs.pooling.backend` says, drawing the same law from its own
            counter-based stream (:func:`kernel_gumbels` rebuilds that noise).

    Shape: (B, C, H, W) -> (B, C, Ho, Wo).
    """
    check_input(x, kernel_size, stride, padding)
    check_options(normalize, hard, eval_mode, rectifier, eps)
    sampling = training or eval_mode == "sample"
    kernels = backend.kernels_for(x, temperature, kernel_size=kernel_size) if gumbels is None else None
    if kernels is not None:
        mode = ("hard" if hard else "soft") if sampling else eval_mode
        seed = backend.draw_seed(x.device) if sampling else ops.no_seed(x.device)
        options = (kernel_size, stride, padding, normalize, mode, rectifier or "none", float(eps))
        return ops.apply(ops.TDGS, kernels, x, temperature, seed, *options)
    if training and gumbels is None:  # the reference is about to draw: refused while exporting or tracing
        backend.refuse_lowering_samples("tdgs_pool2d")
    elif sampling and gumbels is None:
        backend.refuse_lowering_samples("tdgs_pool2d", "eval_mode='sample': set it to 'expectation' or 'argmax'")
    if rectifier is not None:
        temperature = rectified_temperature(temperature, rectifier, eps)
    window = {"kernel_size": kernel_size, "stride": stride, "padding": padding}
    return _reference(x, temperature.to(x.dtype), window, normalize, hard, eval_mode if not sampling else None, gumbels)


def _reference(x, temperature, window, normalize, hard, eval_mode, gumbels) -> torch.Tensor:
    """:func:`tdgs_pool2d` in plain PyTorch, which defines it (``eval_mode`` None: sampling)."""
    a = windows(x, **window)  # (B, C, Ho, Wo, k*k); padded positions 0, as if absent for the norms
    z = normalized_windows(a, normalize) / temperature.unsqueeze(-1)  # (B, C, Ho, Wo, k*k)
    if window["padding"]:  # never picked, no weight
        z = z.masked_fill(padded_positions(*x.shape[2:], **window, device=x.device), float("-inf"))
    if eval_mode is None:
        if gumbels is None:
            gumbels = gumbel_noise(z.shape, dtype=z.dtype, device=z.device)
        y = torch.softmax(z + gumbels, dim=-1)  # (B, C, Ho, Wo, k*k)
        if not hard:
            return (a * y).sum(-1)
        picked = a.gather(-1, y.argmax(-1, keepdim=True)).squeeze(-1)  # (B, C, Ho, Wo)
        soft = (a.detach() * y).sum(-1)  # carries the straight-through gradient, adds exactly 0
        return picked + (soft - soft.detach())
    if eval_mode == "expectation":
        return (a * torch.softmax(z, dim=-1)).sum(-1)
    return a.gather(-1, z.argmax(-1, keepdim=True)).squeeze(-1)  # argmax


def kernel_gumbels(seed: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Gumbel noise ``-log(-log(u))`` the kernels use for key ``seed`` and output shape
    ``(B, C, Ho, Wo, k*k)``, for checking them against the reference code."""
    *outputs, window = shape
    kernels = backend.module(backend.kernels_for(torch.empty((1, 1, 1, 1), dtype=dtype, device=seed.device)))
    u = kernels.window_uniforms(seed, int(torch.Size(outputs).numel()), window, dtype)
    return -torch.log(-torch.log(u)).view(*shape)


class TDGSPool(LazyChannels, Pool2d):
    """See :func:`tdgs_pool2d`. Learns the raw temperature ``theta``; ``T = rectifier(theta) + eps``.

    Args:
        t0: initial temperature scale: ``theta = t0 * U(0.5, 1.5)`` elementwise.
        granularity: ``"position"`` (one ``T`` per channel and output cell, (C, Ho, Wo), default),
            ``"channel"`` (C,) or ``"layer"`` (1,). ``position`` is sized at the first forward
            unless ``input_size`` is given, and refuses inputs of another spatial size later.
        eps: floor added to the rectified temperature (default 0.1).
        rectifier: ``"relu"`` (default) or ``"softplus"``.
        normalize: window normalisation before dividing by ``T``: ``"l2"`` (default), ``"none"``,
            ``"l1"`` or ``"max"``.
        hard: training outputs the sampled value (default) rather than the soft sample.
        eval_mode: ``"expectation"`` (default), ``"sample"`` or ``"argmax"``.
        input_size: ``(H, W)`` of the input, to size ``position`` temperatures at construction.
        window: ``kernel_size``, ``stride``, ``padding`` (see :class:`~tdgs.pooling.base.Pool2d`).

    Example:
        >>> pool = TDGSPool(16)
        >>> pool(torch.rand(8, 16, 32, 32)).shape
        torch.Size([8, 16, 16, 16])
        >>> pool.temperature.shape
        torch.Size([16, 16, 16])
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        t0: float = 1.0,
        granularity: str = "position",
        eps: float = 0.1,
        rectifier: str = "relu",
        normalize: str = "l2",
        hard: bool = True,
        eval_mode: str = "expectation",
        input_size: Sequence[int] | None = None,
        **window,
    ) -> None:
        super().__init__(channels, **window)
        self.t0 = check_positive_float("t0", t0)
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        self.eps = check_positive_float("eps", eps)
        check_options(normalize, hard, eval_mode, check_choice("rectifier", rectifier, RECTIFIERS), self.eps)
        self.rectifier, self.normalize, self.hard, self.eval_mode = rectifier, normalize, hard, eval_mode
        if input_size is not None and granularity != "position":
            raise ValueError(f"input_size is only for granularity='position', not {granularity!r}")
        if granularity == "layer" or (granularity == "channel" and self.channels is not None):
            self.theta = nn.Parameter(torch.empty(1 if granularity == "layer" else self.channels))
            self._init_theta()
        else:  # sized by the first input (or input_size)
            self.theta = nn.UninitializedParameter()
        if input_size is not None:
            if len(input_size) != 2:
                raise ValueError(f"input_size must be (H, W), but got {input_size!r}")
            if self.channels is None:
                raise ValueError("input_size sizes the position temperatures at construction: it needs channels too")
            height, width = (check_positive_int("input_size", n) for n in input_size)
            self.theta.materialize(
                (self.channels, *pooled_size(height, width, self.kernel_size, self.stride, self.padding))
            )
            self._init_theta()

    def _init_theta(self) -> None:
        with torch.no_grad():
            self.theta.uniform_(0.5, 1.5).mul_(self.t0)

    def channel_rows(self) -> int | None:
        return None if self.granularity == "layer" else self.theta.shape[0]

    def materialize(self, x: torch.Tensor) -> None:
        """Size the temperatures from the first input: (C, Ho, Wo) for ``position``, (C,) for ``channel``."""
        size = (self.channels, *check_input(x, **self.window)) if self.granularity == "position" else (self.channels,)
        self.theta.materialize(size, device=x.device)  # the dtype stays the module's
        self._init_theta()

    @property
    def temperature(self) -> torch.Tensor:
        """The rectified temperature ``T``, shape (C, Ho, Wo), (C, 1, 1) or (1, 1, 1)."""
        theta = self.theta if self.granularity == "position" else self.theta.view(-1, 1, 1)
        return rectified_temperature(theta, self.rectifier, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        size = check_input(x, **self.window)
        if self.granularity == "position" and tuple(self.theta.shape[1:]) != size:
            raise ValueError(
                f"input of spatial size {tuple(x.shape[2:])} pools to {size}, but this pooler's "
                f"position temperatures have size {tuple(self.theta.shape[1:])}"
            )
        theta = self.theta if self.granularity == "position" else self.theta.view(-1, 1, 1)
        return tdgs_pool2d(
            x,
            theta,
            rectifier=self.rectifier,
            eps=self.eps,
            **self.window,
            normalize=self.normalize,
            hard=self.hard,
            eval_mode=self.eval_mode,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, t0={self.t0}, granularity={self.granularity!r}, eps={self.eps}, "
            f"rectifier={self.rectifier!r}, normalize={self.normalize!r}, hard={self.hard}, "
            f"eval_mode={self.eval_mode!r}"
        )

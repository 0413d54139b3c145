"""What every pooler module shares: channel count, the window (kernel_size, stride, padding, as
``nn.MaxPool2d`` takes them), input checks; and lazy parameters for poolers built without
``channels``."""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from .checks import check_input, check_positive_int, check_window


class Pool2d(nn.Module):
    """Base of the pooler modules: ``(B, C, H, W) -> (B, C, Ho, Wo)``, ``Ho = floor((H + 2p - k) / s) + 1``.

    Args:
        channels: number of input channels ``C``, which sizes per-channel parameters; ``None``: taken
            from the first input (as ``nn.LazyConv2d``).
        kernel_size: window side ``k`` (as :class:`torch.nn.MaxPool2d`).
        stride: window step ``s``.
        padding: ``p`` lines added on every side, at most ``k // 2``; padded positions are never
            picked and carry no weight (as max pooling's ``-inf`` padding).
        dilation, ceil_mode: only ``1`` and ``False``, accepted so that a pooler takes
            ``nn.MaxPool2d``'s arguments.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        dilation: int = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.channels = None if channels is None else check_positive_int("channels", channels)
        self.kernel_size, self.stride, self.padding = check_window(kernel_size, stride, padding, dilation, ceil_mode)

    def check_channels(self, x: torch.Tensor) -> None:
        """Refuse a (B, C, H, W) input of another channel count than the pooler's (the pooling
        functions check the rest)."""
        if self.channels is not None and x.dim() == 4 and x.shape[1] != self.channels:
            raise ValueError(f"input has {x.shape[1]} channels, but this pooler was built for channels={self.channels}")

    @property
    def window(self) -> dict:
        """The window arguments of the pooling functions."""
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


# the window options every pooler takes (as nn.MaxPool2d) and their defaults, from the signature
WINDOW = {
    k: p.default
    for k, p in inspect.signature(Pool2d.__init__).parameters.items()
    if k in ("kernel_size", "stride", "padding")
}


class LazyChannels(LazyModuleMixin):
    """For a pooler whose parameters have one row per channel: built without ``channels``, they are
    ``nn.UninitializedParameter``s until the first input says how many (see ``materialize``), made
    on that input's device in the module's dtype (float32 unless ``.to()`` changed it; an input
    under autocast does not make half-precision parameters)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_post_hook(LazyChannels._channels_from_state)

    def initialize_parameters(self, x: torch.Tensor) -> None:
        """Size the uninitialised parameters from the first input (called by LazyModuleMixin)."""
        if self.has_uninitialized_params():
            self.check_channels(x)  # the input's checks first
            check_input(x, **self.window)
            self.channels = x.shape[1]
            self.materialize(x)

    @staticmethod
    def _channels_from_state(module: LazyChannels, incompatible_keys) -> None:
        """A state_dict sized the parameters instead of an input: they say how many channels."""
        if module.channels is None and not module.has_uninitialized_params():
            module.channels = module.channel_rows()

    def materialize(self, x: torch.Tensor) -> None:  # pragma: no cover - every lazy pooler overrides it
        raise NotImplementedError

    def channel_rows(self) -> int | None:  # pragma: no cover - every lazy pooler overrides it
        """The channel count the parameters hold (None where they do not depend on it)."""
        raise NotImplementedError

"""What the learnable poolers of a trained network have learned, per pool layer (the network's
poolers in module order, numbered from 1): TDGS temperatures (summary statistics and the full
table), mixed and gated gates."""

from __future__ import annotations

import pandas as pd
import torch

from .pooling import GatedPool, MixedPool, Pool2d, TDGSPool


def temperature_stats(temperature: torch.Tensor) -> dict[str, float]:
    """mean, median, quartiles, min, max of ``T`` and the share of max-like temperatures (``T < 1``)."""
    t = temperature.detach().float().flatten()
    q25, q75 = torch.quantile(t, torch.tensor([0.25, 0.75], device=t.device)).tolist()
    return {
        "T_mean": t.mean().item(),
        "T_median": t.median().item(),
        "T_q25": q25,
        "T_q75": q75,
        "T_min": t.min().item(),
        "T_max": t.max().item(),
        "T_below_1": (t < 1).float().mean().item(),
    }


def poolers(model: torch.nn.Module) -> list[Pool2d]:
    """The network's pool layers, in module order."""
    return [m for m in model.modules() if isinstance(m, Pool2d)]


@torch.no_grad()
def pooler_summary(model: torch.nn.Module, probe: torch.Tensor) -> dict[str, float]:
    """Columns ``pool<i>_<stat>`` for every learnable pool layer ``i`` (1-based). Gated gates
    depend on the input, so their mean is taken over the ``probe`` images (evaluation mode)."""
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        pool.register_forward_pre_hook(lambda module, args, i=i: inputs.__setitem__(i, args[0]))
        for i, pool in enumerate(poolers(model), 1)
        if isinstance(pool, GatedPool)
    ]
    if hooks:
        was_training = model.training
        model.eval()(probe)
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    stats: dict[str, float] = {}
    for i, pool in enumerate(poolers(model), 1):
        if isinstance(pool, TDGSPool):
            stats.update({f"pool{i}_{k}": v for k, v in temperature_stats(pool.temperature).items()})
        elif isinstance(pool, MixedPool):
            stats[f"pool{i}_gate_mean"] = pool.gate.mean().item()
        elif isinstance(pool, GatedPool):
            stats[f"pool{i}_gate_mean"] = pool.gate(inputs[i]).mean().item()
    return stats


def temperature_table(model: torch.nn.Module) -> pd.DataFrame:
    """Every learned temperature, one row each: ``layer`` (1-based), ``channel``, ``row``, ``col``,
    ``temperature``; ``row``/``col`` are 0 for channel- or layer-wise temperatures. Empty when the
    model has no TDGS pool."""
    frames = []
    for layer, pool in enumerate(poolers(model), 1):
        if not isinstance(pool, TDGSPool):
            continue
        t = pool.temperature.detach().cpu()  # (C, Ho, Wo), (C, 1, 1) or (1, 1, 1)
        channel, row, col = torch.meshgrid(*(torch.arange(n) for n in t.shape), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "channel": channel.flatten().numpy(),
                    "row": row.flatten().numpy(),
                    "col": col.flatten().numpy(),
                    "temperature": t.flatten().numpy(),
                }
            )
        )
    columns = ["layer", "channel", "row", "col", "temperature"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

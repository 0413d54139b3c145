"""Pooler benchmark: forward+backward time of every pooler against F.max_pool2d.

Medians over interleaved repetitions (every candidate is timed once per round, so slow drifts of
the machine hit all of them alike); ratios are measured in one process. Prints a Markdown table
and writes it as CSV under ``outputs/bench/``.

    python scripts/bench.py [--reps 30] [--batch 64] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from tdgs.pooling import POOLERS, create_pooler

SHAPES = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]  # (C, H, W) at the deck's CIFAR CNN's pools


def candidates(channels: int, height: int, width: int) -> dict[str, callable]:
    """name -> a module (or function) to time; TDGS in training and in each evaluation mode."""
    out = {"F.max_pool2d": lambda x: F.max_pool2d(x, 2, 2)}
    for name in POOLERS:
        out[name] = create_pooler(name, channels).train()
    for mode in ("expectation", "sample", "argmax"):
        out[f"tdgs eval={mode}"] = create_pooler("tdgs", channels, eval_mode=mode).eval()
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_backward(fns: dict, x: torch.Tensor, reps: int, inner: int) -> dict[str, float]:
    """Median seconds of one forward+backward per candidate, over ``reps`` interleaved rounds."""
    grad = torch.ones_like(fns["F.max_pool2d"](x))
    times = {name: [] for name in fns}
    for round_ in range(reps + 2):  # two warm-up rounds (also sizes lazy parameters)
        for name, fn in fns.items():
            _sync(x.device)
            start = time.perf_counter()
            for _ in range(inner):
                fn(x).backward(grad)
            _sync(x.device)
            if round_ >= 2:
                times[name].append((time.perf_counter() - start) / inner)
            x.grad = None
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed rounds per candidate")
    parser.add_argument("--inner", type=int, default=5, help="calls per timed round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows = []
    for channels, height, width in SHAPES:
        x = torch.rand(args.batch, channels, height, width, device=device, requires_grad=True)
        fns = candidates(channels, height, width)
        for module in fns.values():
            if isinstance(module, torch.nn.Module):
                module.to(device)
        medians = time_forward_backward(fns, x, args.reps, args.inner)
        for name, seconds in medians.items():
            rows.append(
                {
                    "shape": f"({args.batch},{channels},{height},{width})",
                    "pooler": name,
                    "ms": 1e3 * seconds,
                    "x_max_pool": seconds / medians["F.max_pool2d"],
                }
            )
    table = pd.DataFrame(rows)
    wide = table.pivot(index="pooler", columns="shape", values="x_max_pool")
    wide = wide.loc[list(dict.fromkeys(table["pooler"]))]
    ms = table.pivot(index="pooler", columns="shape", values="ms").loc[wide.index]
    print(f"forward+backward, batch {args.batch}, {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median ms (ratio to F.max_pool2d)")
    cells = ms.map(lambda v: f"{v:.3f}") + " (" + wide.map(lambda v: f"{v:.2f}x") + ")"
    print(markdown(cells))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"poolers_{device.type}.csv"
    table.to_csv(path, index=False)
    print(f"wrote {path}")


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, its index as the first column."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(frame.index, frame.values)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

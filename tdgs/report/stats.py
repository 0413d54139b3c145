"""Group statistics: mean +- std (n), and Welch's comparison of two groups."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (nan for one value) and count."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    return (float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)


def welch(a, b, confidence: float = 0.95) -> dict[str, float]:
    """mean(a) - mean(b), its Welch confidence interval and the two-sided p-value of Welch's t-test.
    NaN where either group has fewer than two values or no spread at all."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    out = {"diff": diff, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if len(a) < 2 or len(b) < 2:
        return out
    if a.var() + b.var() == 0:
        return out
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence)
    out.update(ci_low=float(interval.low), ci_high=float(interval.high), p=float(test.pvalue))
    return out


def cell(mean: float, std: float, n: int) -> str:
    """``mean +- std (n)`` in percent points; std is omitted for a single run."""
    if n == 0:
        return ""
    return f"{mean:.2f} ({n})" if n == 1 or math.isnan(std) else f"{mean:.2f} ± {std:.2f} ({n})"

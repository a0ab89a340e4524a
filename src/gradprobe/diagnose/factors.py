"""Gradient ratios between layers, from records: the vanishing factor and its course over a run."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradprobe import records as R


def _series(frame: pd.DataFrame, name: str, stat: str, kind: str) -> pd.Series:
    layer, _, tensor = name.rpartition(".")
    sel = frame[(frame["kind"] == kind) & (frame["stat"] == stat) & (frame["layer"] == layer)
                & (frame["tensor"] == tensor)]
    return sel.groupby("step")["value"].mean()


def factor_series(frame: pd.DataFrame, top: str, bottom: str, stat: str = R.MEAN_ABS,
                  kind: str = R.GRAD) -> pd.Series:
    """``stat(top) / stat(bottom)`` per recorded step (e.g. output layer over first layer)."""
    a, b = _series(frame, top, stat, kind), _series(frame, bottom, stat, kind)
    both = a.index.intersection(b.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a[both] / b[both]).rename("factor")


def vanishing_factor(frame: pd.DataFrame, weight_layers: Sequence[str], tail: float = 0.1) -> float:
    """Mean |grad| of the last weight matrix over the first's, median over the last ``tail`` of recorded steps.

    The gradients are those recorded (``records.GRAD``): of the data loss when the trainer adds an L2
    term, the same gradient as CS231n's sum-of-magnitudes heuristic.

    Above 1 the gradient shrinks on its way to the input; NaN when fewer than two weight matrices
    were recorded.
    """
    if len(weight_layers) < 2:
        return math.nan
    series = factor_series(frame, weight_layers[-1], weight_layers[0])
    if series.empty:
        return math.nan
    n = max(1, math.ceil(len(series) * tail))
    return float(np.median(series.to_numpy()[-n:]))


def median_factor(frame: pd.DataFrame, weight_layers: Sequence[str]) -> float:
    """The same ratio, median over every recorded step: separates arms that converge to similar ends."""
    if len(weight_layers) < 2:
        return math.nan
    series = factor_series(frame, weight_layers[-1], weight_layers[0])
    return float(np.median(series.to_numpy())) if len(series) else math.nan


__all__ = ["factor_series", "median_factor", "vanishing_factor"]

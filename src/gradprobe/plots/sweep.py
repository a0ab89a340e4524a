"""Figures of a sweep's aggregate table: the depth curve, accuracy against depth, a heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Columns that carry the depth, so they never split the lines of a plot against depth.
_DEPTH_COLUMNS = ("depth", "model.depth", "model.hidden")


def _dims(agg: pd.DataFrame) -> list[str]:
    """The descriptive columns of an aggregate table (those before ``n_runs``), minus ``point``."""
    cols = list(agg.columns)
    return [c for c in cols[:cols.index("n_runs")] if c != "point"]


def _series_keys(agg: pd.DataFrame, x: str, hue: str) -> list[str]:
    """``hue`` plus every other varying column not fixed by ``hue`` (e.g. an init axis): one line each."""
    keys = [hue]
    for col in _dims(agg):
        if col in (x, hue, *_DEPTH_COLUMNS) or agg[col].astype(str).nunique() < 2:
            continue
        if agg.groupby(hue, dropna=False)[col].nunique(dropna=False).max() > 1:
            keys.append(col)
    return keys


def _label(keys: Sequence[str], values: Sequence[object]) -> str:
    return ", ".join(str(v) if i == 0 else f"{k.split('.')[-1]}={v}" for i, (k, v) in enumerate(zip(keys, values)))


def _draw(ax: object, agg: pd.DataFrame, x: str, hue: str, band: tuple[str, str], log: bool) -> None:
    """One line per series with a shaded CI band; ``band`` = (mean, ci half-width) columns."""
    mean_col, ci_col = band
    keys = _series_keys(agg, x, hue)
    for values, grp in agg.groupby(keys, sort=False, dropna=False):
        grp = grp.sort_values(x)
        xs = grp[x].to_numpy(dtype=float)
        mean, ci = grp[mean_col].to_numpy(dtype=float), grp[ci_col].to_numpy(dtype=float)
        lo, hi = mean - ci, mean + ci
        if log:  # statistics were taken of log10 values: back to the factor itself
            mean, lo, hi = 10.0 ** mean, 10.0 ** lo, 10.0 ** hi
        vals = values if isinstance(values, tuple) else (values,)
        (line,) = ax.plot(xs, mean, marker="o", label=_label(keys, vals))  # type: ignore[attr-defined]
        ax.fill_between(xs, lo, hi, where=np.isfinite(lo) & np.isfinite(hi),  # type: ignore[attr-defined]
                        color=line.get_color(), alpha=0.2, linewidth=0)


def depth_curve(agg: pd.DataFrame, hue: str = "model.activation", x: str = "depth") -> Figure:
    """The depth curve: vanishing factor against depth, one line per activation, log y, 95% CI bands.

    Mean and interval are those of log10(factor) over seeds (a geometric mean), the honest average
    of a ratio spanning decades; a point with a single seed has no band.

    Requires: summary vanishing_factor (aggregate columns log10_vanishing_factor_mean/_ci).

    Args:
        agg: a sweep aggregate table (``gradprobe.sweep.aggregate``).
        hue: column that separates the lines.
        x: depth column (number of hidden layers).

    Returns:
        A Figure with one Axes.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    _draw(ax, agg, x, hue, ("log10_vanishing_factor_mean", "log10_vanishing_factor_ci"), log=True)
    ax.set_yscale("log")
    ax.set_xticks(sorted(agg[x].dropna().unique()))
    ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel("vanishing factor |grad| last / first (geometric mean)")
    ax.set_title("depth curve: 95% CI over seeds")
    ax.legend(fontsize="small")
    return fig


def accuracy_curve(agg: pd.DataFrame, split: str = "train", hue: str = "model.activation",
                   x: str = "depth") -> Figure:
    """Final accuracy against depth, one line per activation, with 95% CI bands over seeds.

    Requires: summary train_accuracy or test_accuracy (aggregate columns <split>_accuracy_mean/_ci).

    Args:
        agg: a sweep aggregate table.
        split: ``train`` or ``test``.
        hue: column that separates the lines.
        x: depth column.

    Returns:
        A Figure with one Axes, y from 0 to 1.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    metric = f"{split}_accuracy"
    _draw(ax, agg, x, hue, (f"{metric}_mean", f"{metric}_ci"), log=False)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(sorted(agg[x].dropna().unique()))
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel(f"{split} accuracy")
    ax.set_title(f"{split} accuracy against depth: 95% CI over seeds")
    ax.legend(fontsize="small")
    return fig


def heatmap(agg: pd.DataFrame, x: str, y: str, metric: str = "train_accuracy") -> Figure:
    """Mean of ``metric`` over seeds on a grid of two axes, each cell annotated.

    ``vanishing_factor`` is drawn as log10 of its geometric mean.

    Requires: summary <metric> (aggregate column <metric>_mean).

    Args:
        agg: a sweep aggregate table.
        x: column along the horizontal axis.
        y: column along the vertical axis.
        metric: a pooled metric, e.g. train_accuracy, final_loss, vanishing_factor.

    Returns:
        A Figure with one Axes and a colour bar.

    Raises:
        ValueError: if the table has several rows per (x, y) cell; other varying columns are named.
    """
    column = "log10_vanishing_factor_mean" if metric == "vanishing_factor" else f"{metric}_mean"
    if agg.duplicated([x, y]).any():
        others = [c for c in _dims(agg) if c not in (x, y) and agg[c].astype(str).nunique() > 1]
        raise ValueError(f"heatmap: several rows per ({x}, {y}) cell; also varying: {', '.join(others)}")
    table = agg.pivot(index=y, columns=x, values=column).reindex(index=agg[y].unique(), columns=agg[x].unique())
    fig = Figure(figsize=(2.4 + 1.1 * table.shape[1], 1.4 + 0.7 * table.shape[0]), layout="constrained")
    ax = fig.subplots()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "-" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                color="white" if np.isfinite(v) and v < np.nanmean(values) else "black", fontsize="small")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    label = "log10 vanishing factor" if metric == "vanishing_factor" else metric.replace("_", " ")
    ax.set_title(f"{label}, mean over seeds")
    fig.colorbar(image, ax=ax, label=label)
    return fig


__all__ = ["accuracy_curve", "depth_curve", "heatmap"]

"""Layer x step heatmap of log10 gradient magnitude, one panel per arm on a shared colour scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gradprobe import records as R
from gradprobe.plots.curves import STAT_LABELS, experiment_title
from gradprobe.plots.select import group_runs, seed_spread, stat_table, weight_layer_order
from gradprobe.plots.style import arm_colors, new_figure, order_layers, positive
from gradprobe.store.reader import Run

__all__ = ["grad_heatmap", "log_pivot", "step_edges"]


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges (n + 1,) of sorted steps (n,): cell i spans [step i, step i + 1).

    The last cell is as wide as the one before it (1 step when there is only one), so the
    x axis starts at the first recorded step rather than before it.
    """
    steps = np.asarray(steps, dtype=np.float64)
    width = steps[-1] - steps[-2] if steps.size > 1 else 1.0
    return np.append(steps, steps[-1] + width)


def log_pivot(table: pd.DataFrame, layers: Sequence[str]) -> pd.DataFrame:
    """log10 of the per-(layer, step) median over seeds, rows ``layers``, columns sorted steps.

    Zero or non-finite magnitudes become NaN (drawn as a grey "no value" cell).
    """
    spread = seed_spread(table, ["layer", "step"])
    pivot = spread.pivot(index="layer", columns="step", values="median").reindex(layers)
    return pd.DataFrame(np.log10(positive(pivot.to_numpy())), index=pivot.index,
                        columns=pivot.columns)


def grad_heatmap(runs: Sequence[Run], stat: str = R.MEAN_ABS) -> Figure:
    """log10 gradient magnitude per weight matrix (rows, input at the bottom) and step (columns).

    Requires: kind ``grad``, stat ``mean_abs`` (or ``stat``), tensor ``weight``.

    Args:
        runs: the run group; several seeds of an arm are reduced to the median per cell.
        stat: gradient statistic to draw.

    Returns:
        Figure with one panel per arm, one colour scale shared by all panels and a colourbar.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = stat_table(runs, R.GRAD, stat, "weight")
    layers = order_layers(table["layer"], weight_layer_order(runs))
    pivots = {arm: log_pivot(table[table["arm"] == arm], layers) for arm in groups}
    finite = np.concatenate([p.to_numpy().ravel() for p in pivots.values()])
    finite = finite[np.isfinite(finite)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    cmap = colormaps["magma"].with_extremes(bad="#bbbbbb")
    height = max(2.8, 0.9 + 0.4 * len(layers))
    fig, axes = new_figure(1, len(groups), panel=(4.6, height), sharey=True)
    mesh = None
    for ax, arm in zip(axes[0], groups):
        pivot = pivots[arm]  # NaN cells (zero or non-finite magnitude) stay, drawn grey
        steps = pivot.columns.to_numpy()
        if steps.size == 0:
            ax.set_title(f"arm: {arm} (no records)", color=colors[arm])
            continue
        mesh = ax.pcolormesh(step_edges(steps), np.arange(len(layers) + 1) - 0.5,
                             np.ma.masked_invalid(pivot.to_numpy()), cmap=cmap, norm=norm,
                             shading="flat", rasterized=True)
        ax.set_title(f"arm: {arm}", color=colors[arm], fontweight="bold")
        ax.set_xlabel("optimizer step")
    axes[0][0].set_yticks(np.arange(len(layers)), layers)
    axes[0][0].set_ylabel("weight matrix (input at bottom)")
    if mesh is not None:
        missing = any(np.isnan(p.to_numpy()).any() for p in pivots.values())
        note = "\n(grey: 0 or not finite)" if missing else ""
        fig.colorbar(mesh, ax=list(axes[0]), label=f"log10 {STAT_LABELS.get(stat, stat)}{note}")
    fig.suptitle(experiment_title(runs, f"log10 {STAT_LABELS.get(stat, stat)} per layer and step"))
    return fig

"""Per-layer statistics across epochs, one row per arm: weights, and gradients with loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradprobe import records as R
from gradprobe.plots.curves import experiment_title
from gradprobe.plots.select import (
    group_runs,
    metrics_table,
    seed_spread,
    stat_table,
    weight_layer_order,
)
from gradprobe.plots.style import (
    arm_colors,
    dot_marker,
    layer_colors,
    new_figure,
    order_layers,
    positive,
)
from gradprobe.store.reader import Run

__all__ = ["grad_mean_std_loss", "steps_per_epoch", "weight_stats"]


def steps_per_epoch(runs: Sequence[Run]) -> int | None:
    """Optimizer steps per epoch when every evaluation fell on an epoch end, else None.

    Read from the metrics' (step, epoch) pairs: with ``eval_every: epoch`` step = epoch * s.
    """
    table = metrics_table(runs)
    pairs = table.loc[table["epoch"] > 0, ["step", "epoch"]].drop_duplicates()
    if pairs.empty:
        return None
    ratios = pairs["step"].to_numpy() / pairs["epoch"].to_numpy()
    first = ratios[0]
    if first >= 1 and float(first).is_integer() and np.all(ratios == first):
        return int(first)
    return None


def _x_axis(runs: Sequence[Run]) -> tuple[float, str]:
    """Divisor of steps and x label: epochs when they are whole, else optimizer steps."""
    per_epoch = steps_per_epoch(runs)
    return (float(per_epoch), "epoch") if per_epoch else (1.0, "optimizer step")


def _layer_lines(ax: Axes, sel: pd.DataFrame, layers: Sequence[str], shades: dict[str, str],
                 scale: float, log: bool = False) -> None:
    """Plot one median-over-seeds line per layer of ``sel`` (steps divided by ``scale``)."""
    for layer in layers:
        part = sel[sel["layer"] == layer]
        if part.empty:
            continue
        spread = seed_spread(part, ["step"])
        y = spread["median"].to_numpy()
        ax.plot(spread["step"].to_numpy() / scale, positive(y) if log else y,
                color=shades[layer], label=layer, linewidth=1.2, marker=dot_marker(len(y)),
                markersize=3)


def _finish(fig: Figure, layers: Sequence[str], shades: dict[str, str], title: str) -> None:
    handles = [Line2D([], [], color=shades[layer], label=layer) for layer in layers]
    fig.legend(handles=handles, loc="outside right upper", title="layer (input first)",
               fontsize="small")
    fig.suptitle(title)


def weight_stats(runs: Sequence[Run]) -> Figure:
    """Mean and standard deviation of each weight matrix across training, one row per arm.

    Requires: kind ``weight``, stats ``mean`` and ``std``, tensor ``weight``.

    Args:
        runs: the run group; several seeds of an arm are reduced to the median.

    Returns:
        Figure with rows = arms, columns = weight mean, weight std (columns share y).
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = stat_table(runs, R.WEIGHT, [R.MEAN, R.STD], "weight")
    layers = order_layers(table["layer"], weight_layer_order(runs))
    shades = layer_colors(layers)
    scale, xlabel = _x_axis(runs)
    fig, axes = new_figure(len(groups), 2, panel=(4.4, 2.6), sharex=True, sharey="col")
    for row, arm in zip(axes, groups):
        for ax, stat, what in zip(row, (R.MEAN, R.STD), ("mean", "std")):
            sel = table[(table["arm"] == arm) & (table["stat"] == stat)]
            _layer_lines(ax, sel, layers, shades, scale)
            ax.set_ylabel(f"weight {what}" + (", ddof 1" if stat == R.STD else ""))
            ax.set_title(f"arm: {arm}: weight {what}", color=colors[arm], fontsize="medium")
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    _finish(fig, layers, shades, experiment_title(runs, "weights per layer over training"))
    return fig


def grad_mean_std_loss(runs: Sequence[Run]) -> Figure:
    """Gradient mean, gradient std (log) per weight matrix and the training loss, one row per arm.

    Requires: kind ``grad``, stats ``mean`` and ``std``, tensor ``weight``; metric ``loss``.

    Args:
        runs: the run group; several seeds of an arm are reduced to the median.

    Returns:
        Figure with rows = arms, columns = grad mean, grad std (log y), train loss (columns
        share y so arms compare directly).
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = stat_table(runs, R.GRAD, [R.MEAN, R.STD], "weight")
    metrics = metrics_table(runs)
    layers = order_layers(table["layer"], weight_layer_order(runs))
    shades = layer_colors(layers)
    scale, xlabel = _x_axis(runs)
    fig, axes = new_figure(len(groups), 3, panel=(4.0, 2.6), sharex=True, sharey="col")
    for row, arm in zip(axes, groups):
        mean_ax, std_ax, loss_ax = row
        own = table[table["arm"] == arm]
        _layer_lines(mean_ax, own[own["stat"] == R.MEAN], layers, shades, scale)
        mean_ax.axhline(0.0, color="black", linewidth=0.6)
        mean_ax.set_ylabel("mean dL_data/dW")
        _layer_lines(std_ax, own[own["stat"] == R.STD], layers, shades, scale, log=True)
        std_ax.set_yscale("log")
        std_ax.set_ylabel("std dL_data/dW, ddof 1 (log)")
        loss = metrics[(metrics["arm"] == arm) & (metrics["split"] == R.TRAIN)
                       & (metrics["metric"] == R.LOSS)]
        if not loss.empty:
            spread = seed_spread(loss, ["step"])
            loss_ax.plot(spread["step"].to_numpy() / scale, spread["median"].to_numpy(),
                         color=colors[arm], linewidth=1.5, marker=dot_marker(len(spread)),
                         markersize=3)
        loss_ax.set_ylabel("train loss")
        for ax, what in zip(row, ("gradient mean", "gradient std", "loss")):
            ax.set_title(f"arm: {arm}: {what}", color=colors[arm], fontsize="medium")
            ax.grid(alpha=0.3, which="both")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    _finish(fig, layers, shades,
            experiment_title(runs, "gradient mean and std per layer, and loss"))
    return fig

"""Curves over training: loss and accuracy per arm, mean |grad| per layer per arm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from gradprobe import records as R
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

__all__ = ["STAT_LABELS", "experiment_title", "grad_over_time", "loss_accuracy", "spans_decades"]

# L is the data loss: the trainer records the gradient before adding the L2 term (records.GRAD).
STAT_LABELS = {
    R.MEAN_ABS: "mean |dL_data/dW|",
    R.NORM: "||dL_data/dW||",
    R.SUM_ABS_PER_SHAPE: "sum |dL_data/dW| / sum(shape)",
    R.MAX_ABS: "max |dL_data/dW|",
}
_SPLIT_STYLE = {R.TRAIN: "-", R.TEST: "--"}


def experiment_title(runs: Sequence[Run], what: str) -> str:
    """Figure title: ``<experiment>: <what>`` (just ``what`` without an experiment name)."""
    names = list(dict.fromkeys(str(r.meta.get("experiment")) for r in runs
                               if r.meta.get("experiment")))
    return f"{', '.join(names)}: {what}" if names else what


def spans_decades(values: np.ndarray, decades: float = 1.0) -> bool:
    """Whether the positive finite values span more than ``decades`` powers of ten."""
    v = positive(values)
    v = v[np.isfinite(v)]
    return bool(len(v)) and float(np.log10(v.max() / v.min())) > decades


def _band(ax: Axes, spread: pd.DataFrame, x: str, color: str, **line: Any) -> Line2D:
    """Draw the median line and, with several seeds, a min-max band; return the line."""
    (handle,) = ax.plot(spread[x].to_numpy(), spread["median"].to_numpy(), color=color,
                        marker=dot_marker(len(spread)), markersize=3, **line)
    if spread["n"].max() > 1:
        ax.fill_between(spread[x].to_numpy(), spread["lo"].to_numpy(), spread["hi"].to_numpy(),
                        color=color, alpha=0.2, linewidth=0)
    return handle


def loss_accuracy(runs: Sequence[Run]) -> Figure:
    """Loss and accuracy of every arm over training (median and min-max band over seeds).

    Requires: metrics ``loss`` and ``accuracy`` of splits ``train`` (and ``test`` if present).

    Args:
        runs: the run group (every arm x seed), grouped by ``meta["arm"]``.

    Returns:
        Figure with two panels: loss (log y when it spans more than a decade) and accuracy.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = metrics_table(runs)
    splits = [s for s in (R.TRAIN, R.TEST) if (table["split"] == s).any()]
    fig, axes = new_figure(1, 2, panel=(5.2, 3.6))
    for ax, metric in zip(axes[0], (R.LOSS, R.ACCURACY)):
        for arm in groups:
            for split in splits:
                sel = table[(table["arm"] == arm) & (table["split"] == split)
                            & (table["metric"] == metric)]
                if sel.empty:
                    continue
                label = arm if len(splits) == 1 else f"{arm} ({split})"
                _band(ax, seed_spread(sel, ["step"]), "step", colors[arm],
                      linestyle=_SPLIT_STYLE[split], label=label)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    loss_ax, acc_ax = axes[0]
    losses = table.loc[table["metric"] == R.LOSS, "value"].to_numpy()
    if spans_decades(losses):
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss (objective incl. L2 term)")
    loss_ax.set_title("Loss")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    acc_ax.set_title("Accuracy")
    legend_ax = acc_ax if acc_ax.get_legend_handles_labels()[0] else loss_ax  # a run may store only its loss
    legend_ax.legend(title="arm" if len(splits) == 1 else "arm (split)", fontsize="small")
    fig.suptitle(experiment_title(runs, "loss and accuracy per arm"))
    return fig


def grad_over_time(runs: Sequence[Run], include_bias: bool = False,
                   stat: str = R.MEAN_ABS) -> Figure:
    """Gradient magnitude of each layer over training, one line per layer, one panel per arm.

    Requires: kind ``grad``, stat ``mean_abs`` (or ``stat``), tensor ``weight`` (and ``bias``).

    Args:
        runs: the run group; several seeds of an arm are reduced to the median per step.
        include_bias: also draw bias gradients (dashed, in the layer's colour).
        stat: gradient statistic to draw, e.g. ``records.SUM_ABS_PER_SHAPE``.

    Returns:
        Figure with one log-y panel per arm sharing the y axis, layers coloured by depth.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    tensors = ["weight", "bias"] if include_bias else ["weight"]
    table = stat_table(runs, R.GRAD, stat, tensors)
    layers = order_layers(table["layer"], weight_layer_order(runs))
    shades = layer_colors(layers)
    fig, axes = new_figure(1, len(groups), sharey=True)
    for ax, arm in zip(axes[0], groups):
        for layer in layers:
            for tensor in tensors:
                sel = table[(table["arm"] == arm) & (table["layer"] == layer)
                            & (table["tensor"] == tensor)]
                if sel.empty:
                    continue
                spread = seed_spread(sel, ["step"])
                label = layer if tensor == "weight" else f"{layer} bias"
                ax.plot(spread["step"].to_numpy(), positive(spread["median"].to_numpy()),
                        color=shades[layer], linestyle="-" if tensor == "weight" else "--",
                        label=label, linewidth=1.2, marker=dot_marker(len(spread)),
                        markersize=3, rasterized=len(spread) > 5000)  # keep SVGs small
        ax.set_yscale("log")
        ax.set_title(f"arm: {arm}", color=colors[arm], fontweight="bold")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{STAT_LABELS.get(stat, stat)} (log)")
    handles = [Line2D([], [], color=shades[layer], label=layer) for layer in layers]
    if include_bias:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="bias"))
    fig.legend(handles=handles, loc="outside right upper", title="layer (input first)",
               fontsize="small")
    what = f"{STAT_LABELS.get(stat, stat)} per layer over training"
    what += " (weights solid, biases dashed)" if include_bias else ""
    fig.suptitle(experiment_title(runs, what))
    return fig

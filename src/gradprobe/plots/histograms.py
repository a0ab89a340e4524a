"""Histograms of each layer over time as a ridge (offset) view, like TensorBoard's histogram tab."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.plots.select import arm_of
from gradprobe.plots.style import new_figure, order_layers
from gradprobe.store.reader import Run

__all__ = ["RIDGE_HEIGHT", "histogram_ridges", "pick_steps"]

RIDGE_HEIGHT = 1.8  # a ridge's peak height, in units of the vertical gap between ridges
_KINDS = (R.GRAD, R.WEIGHT, R.ACTIVATION, R.DELTA)
_XLABEL = {R.GRAD: "dL_data/dW", R.WEIGHT: "W", R.ACTIVATION: "output", R.DELTA: "dL/d(output)"}


def pick_steps(steps: Sequence[int], at_most: int) -> list[int]:
    """At most ``at_most`` of the sorted distinct ``steps``, evenly spaced, first and last kept."""
    distinct = sorted({int(s) for s in steps})
    if len(distinct) <= at_most:
        return distinct
    idx = np.unique(np.round(np.linspace(0, len(distinct) - 1, at_most)).astype(int))
    return [distinct[i] for i in idx]


def histogram_ridges(run: Run, kind: str = R.GRAD, layers: Sequence[str] | None = None,
                     tensor: str = "weight", max_ridges: int = 20) -> Figure:
    """One panel per layer: the histogram at each recorded step, stacked top (first) to bottom.

    Each ridge is scaled to its own peak, so it shows the shape and range of the values at
    that step; the x range of a panel covers every step.

    Requires: histograms of ``kind`` (``record.hist_every``), tensor ``tensor``.

    Args:
        run: one run.
        kind: ``"grad"`` or ``"weight"`` (any record kind with histograms).
        layers: module paths to draw; None draws every layer with histograms, input first.
        tensor: parameter tensor, ``"weight"`` or ``"bias"``.
        max_ridges: at most this many steps, evenly spaced, per panel.

    Returns:
        Figure with one panel per layer; the filled ridge of step s is a ``StepPatch`` with gid
        ``"<layer>@<s>"`` whose values are ``base + counts / max(counts) * RIDGE_HEIGHT``.

    Raises:
        GradprobeError: on an unknown kind or when the run has no such histograms.
    """
    if kind not in _KINDS:
        raise GradprobeError(f"kind: {kind!r} is not a record kind; allowed: {', '.join(_KINDS)}")
    hists = run.hists()
    hists = hists[(hists["kind"] == kind) & (hists["tensor"] == tensor)]
    chosen = order_layers(hists["layer"] if layers is None else layers,
                          run.summary.get("weight_layers"))
    hists = hists[hists["layer"].isin(chosen)]
    if hists.empty:
        raise GradprobeError(f"run {run.run_id}: no {kind} histograms of tensor {tensor!r}; "
                             "record them with record.hist_every")
    chosen = [layer for layer in chosen if (hists["layer"] == layer).any()]
    ncols = min(len(chosen), 6)
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = new_figure(nrows, ncols, panel=(3.2, 4.2), sharey=True)
    cmap = colormaps["YlOrBr"]
    for ax, layer in zip(axes.ravel(), chosen):
        own = hists[hists["layer"] == layer]
        steps = pick_steps(own["step"], max_ridges)
        for i, step in enumerate(steps):
            row = own[own["step"] == step].iloc[-1]
            edges, counts = np.asarray(row["edges"]), np.asarray(row["counts"], np.float64)
            height = counts / counts.max() * RIDGE_HEIGHT if counts.max() > 0 else counts
            base = float(len(steps) - 1 - i)  # first step on top; later ridges drawn in front
            shade = cmap(0.3 + 0.65 * i / max(len(steps) - 1, 1))
            ridge = ax.stairs(base + height, edges, baseline=base, fill=True, color=shade,
                              alpha=0.9, zorder=2 * i)
            ridge.set_gid(f"{layer}@{step}")
            ax.stairs(base + height, edges, baseline=base, color="#4d2600", linewidth=0.6,
                      zorder=2 * i + 1)
        ticks = list(range(len(steps)))[:: max(1, len(steps) // 6)]
        ax.set_yticks([len(steps) - 1 - t for t in ticks], [str(steps[t]) for t in ticks])
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(layer)
        ax.set_xlabel(f"{_XLABEL[kind]} ({tensor})")
    for ax in axes.ravel()[len(chosen):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("optimizer step (first at top)")
    arm = arm_of(run)
    title = f"{run.meta.get('experiment', '')} arm {arm}: {kind} histograms per layer over time"
    fig.suptitle(title.strip())
    return fig

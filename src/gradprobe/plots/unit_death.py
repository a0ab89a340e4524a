"""When units died: a unit x step raster for small layers, a histogram of death times for large ones.

Drawn from a run's per-unit snapshot (``Run.units()``, see :mod:`gradprobe.units`), which keeps per unit
the first recorded step it was dead, the last it fired and the start of its final dead streak, not a
mask per step. The raster is therefore exact in three states: *alive* (fired at every recorded step so
far), *dead* (dead at every recorded step since ``dead_since``) and, in between, *dead at times* (dead at
one recorded step or more since ``first_dead``, fired again later).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gradprobe.plots.style import new_figure, order_layers

__all__ = ["RASTER_MAX_UNITS", "STATES", "unit_death", "unit_states"]

RASTER_MAX_UNITS = 256  # layers with more units get a histogram of death times instead of a raster
STATES = ("alive", "dead at times", "dead")  # raster codes 0, 1, 2
_COLORS = ("#d9ead3", "#f6b26b", "#660000")


def unit_states(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The raster of one layer's units: step edges (S + 1,) and states (units, S), codes of :data:`STATES`.

    Column ``j`` covers steps ``edges[j] <= t < edges[j + 1]``; the states change only at the edges
    (first_dead, dead_since), so every recorded step in a column has that column's state.
    """
    rows = rows.sort_values("unit")
    first = rows["first_dead"].to_numpy("int64", na_value=-1)  # (units,)
    since = rows["dead_since"].to_numpy("int64", na_value=-1)
    end = int(rows["last_observed"].max()) + 1
    edges = np.unique(np.concatenate([[0, end], first[first >= 0], since[since >= 0]]))  # (S + 1,)
    t = edges[:-1][None, :]  # (1, S)
    dead = (since[:, None] >= 0) & (t >= since[:, None])
    mixed = (first[:, None] >= 0) & (t >= first[:, None]) & ~dead
    return edges, np.where(dead, 2, np.where(mixed, 1, 0))


def _raster(ax: Axes, layer: str, rows: pd.DataFrame) -> None:
    edges, states = unit_states(rows)
    cmap = ListedColormap(list(_COLORS))
    ax.pcolormesh(edges, np.arange(len(rows) + 1), states, cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3))
    dead = int((rows["dead_since"].fillna(-1) >= 0).sum())
    ax.set_title(f"{layer}: {dead} of {len(rows)} units dead at the end", fontsize=9)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("unit")


def _death_hist(ax: Axes, layer: str, rows: pd.DataFrame) -> None:
    since = rows["dead_since"].dropna()
    since = since[since >= 0].to_numpy("int64")
    end = int(rows["last_observed"].max())
    ax.hist(since, bins=np.linspace(0, max(end, 1), 31).tolist(), color=_COLORS[2])
    ax.set_title(f"{layer}: {len(since)} of {len(rows)} units dead at the end", fontsize=9)
    ax.set_xlabel("dead since step")
    ax.set_ylabel("units")
    if not len(since):
        ax.text(0.5, 0.5, "no unit dead at the last recorded step", ha="center", transform=ax.transAxes, color="grey")


def _saturation_hist(ax: Axes, layer: str, rows: pd.DataFrame) -> None:
    frac = rows["saturated_frac"].to_numpy("float64")
    ax.hist(frac, bins=np.linspace(0, 1, 21).tolist(), color="#3d85c6")
    ax.set_title(f"{layer}: {int((frac > 0.5).sum())} of {len(rows)} units saturated > half the time", fontsize=9)
    ax.set_xlabel("fraction of recorded steps saturated")
    ax.set_ylabel("units")


def unit_death(units: pd.DataFrame, title: str = "") -> Figure:
    """One panel per tracked layer: raster (<= RASTER_MAX_UNITS units) or death-time histogram; saturation.

    Requires: a per-unit snapshot (``Run.units()`` or ``Probe.units()``), columns ``store.layout.UNIT_COLUMNS``.

    Args:
        units: the snapshot of one run.
        title: the figure's title (e.g. the run and arm).

    Returns:
        Figure with one panel per layer in depth order (ReLU family: death; sigmoid/tanh family: saturation).
    """
    layers = order_layers(units["layer"])
    cols = min(3, max(len(layers), 1))
    fig, axes = new_figure(max(1, -(-len(layers) // cols)), cols)
    flat = axes.ravel()
    for ax, layer in zip(flat, layers):
        rows = units[units["layer"] == layer]
        if rows["last_fired"].isna().all():
            _saturation_hist(ax, layer, rows)
        elif len(rows) <= RASTER_MAX_UNITS:
            _raster(ax, layer, rows)
        else:
            _death_hist(ax, layer, rows)
    for ax in flat[len(layers):]:
        ax.set_axis_off()
    if not layers:
        flat[0].text(0.5, 0.5, "no per-unit records", ha="center", transform=flat[0].transAxes, color="grey")
    fig.legend(handles=[Patch(color=c, label=s) for c, s in zip(_COLORS, STATES)], loc="outside lower center",
               ncols=3, fontsize=8)
    observed = int(units["observed_steps"].max()) if len(units) else 0
    fig.suptitle(f"{title + ': ' if title else ''}when units died (on {observed} recorded steps)")
    return fig

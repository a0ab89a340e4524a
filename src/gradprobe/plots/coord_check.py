"""Width-scaling check: activation scale, its change and the update scale per layer against width (log-log)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.plots.style import layer_colors, new_figure, order_layers, positive
from gradprobe.store.reader import Run

__all__ = ["coord_check", "coord_figure", "coord_table"]

_PANELS = ((R.ACT_RMS, "first", "activation RMS at init"),
           (R.ACT_DELTA_RMS, "last", "activation change since init (RMS), last step"),
           (R.UPD_RMS, "last", "weight update RMS, last step"))


def coord_table(runs: Sequence[Run]) -> pd.DataFrame:
    """The kind-``coord`` rows of every run with its width (``config["width"]``), columns ``width`` + records'.

    Raises:
        GradprobeError: if no run holds coord rows with a width in its config.
    """
    parts = [run.frame(kind=R.COORD).assign(width=run.config.get("width")) for run in runs]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if table.empty or table["width"].isna().any():
        raise GradprobeError("runs: no coord-check records (kind 'coord' with config width); "
                             "make them with 'gradprobe coord-check'")
    return table


def coord_figure(table: pd.DataFrame, title: str = "width-scaling check") -> Figure:
    """Three log-log panels (activation at init, its change, the update) against width; a line per layer.

    Args:
        table: columns ``width, step, layer, stat, value`` (e.g. :func:`gradprobe.coord_check.coord_check`).
    """
    last = int(table["step"].max())
    layers = order_layers(table["layer"])
    shades = layer_colors(layers)
    fig, axes = new_figure(1, len(_PANELS))
    for ax, (stat, when, label) in zip(axes[0], _PANELS):
        own = table[table["stat"] == stat]
        step = 0 if when == "first" else (last - 1 if stat == R.UPD_RMS else last)
        own = own[own["step"] == step]
        for layer in layers:
            sel = own[own["layer"] == layer].sort_values("width")
            if not sel.empty:
                ax.plot(sel["width"].to_numpy(np.float64), positive(sel["value"].to_numpy()), marker="o",
                        markersize=3, color=shades[layer])
        ax.set_xscale("log", base=2)
        if not own.empty:
            ax.set_yscale("log")
        ax.set_title(label if when == "first" else f"{label} ({step})", fontsize="medium")
        ax.set_xlabel("width")
        ax.grid(alpha=0.3, which="both")
    fig.legend(handles=[Line2D([], [], color=shades[layer], label=layer) for layer in layers],
               loc="outside right upper", title="layer", fontsize="small")
    fig.suptitle(f"{title}: flat lines transfer across widths")
    return fig


def coord_check(runs: Sequence[Run]) -> Figure:
    """The width-scaling figure of stored coord-check runs (one run per width)."""
    return coord_figure(coord_table(runs))

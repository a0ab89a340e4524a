"""Unit health over training: dead and saturated unit fractions per layer, one panel per arm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from gradprobe import records as R
from gradprobe.plots.curves import experiment_title
from gradprobe.plots.select import group_runs, seed_spread, stat_table
from gradprobe.plots.style import arm_colors, dot_marker, layer_colors, new_figure, order_layers
from gradprobe.store.reader import Run

__all__ = ["HEALTH_STYLES", "unit_health"]

HEALTH_STYLES: dict[str, Literal["-", "--"]] = {R.DEAD_FRAC: "-", R.SATURATED_FRAC: "--"}
_HEALTH_LABELS = {R.DEAD_FRAC: "dead (no gradient for the whole batch)",
                  R.SATURATED_FRAC: "saturated (within 1% of an asymptote)"}


def unit_health(runs: Sequence[Run]) -> Figure:
    """Dead-unit and saturated-unit fractions of each activation layer over training.

    Requires: kind ``activation``, stats ``dead_frac`` and/or ``saturated_frac``.

    Args:
        runs: the run group; several seeds of an arm are reduced to the median.

    Returns:
        Figure with one panel per arm (y 0-100%); colour = layer, solid = dead, dashed = saturated.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = stat_table(runs, R.ACTIVATION, list(HEALTH_STYLES))
    layers = order_layers(table["layer"])
    shades = layer_colors(layers)
    fig, axes = new_figure(1, len(groups), sharey=True)
    for ax, arm in zip(axes[0], groups):
        own = table[table["arm"] == arm]
        for stat, style in HEALTH_STYLES.items():
            for layer in layers:
                sel = own[(own["stat"] == stat) & (own["layer"] == layer)]
                if sel.empty:
                    continue
                spread = seed_spread(sel, ["step"])
                ax.plot(spread["step"].to_numpy(), spread["median"].to_numpy(), linestyle=style,
                        color=shades[layer], label=f"{layer} {stat}", linewidth=1.2,
                        marker=dot_marker(len(spread)), markersize=3)
        if own.empty:
            ax.text(0.5, 0.5, "not recorded for this activation", ha="center",
                    transform=ax.transAxes, color="grey")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(f"arm: {arm}", color=colors[arm], fontweight="bold")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of units")
    present = [s for s in HEALTH_STYLES if (table["stat"] == s).any()]
    handles = [Line2D([], [], color=shades[layer], label=layer) for layer in layers]
    handles += [Line2D([], [], color="black", linestyle=HEALTH_STYLES[s], label=_HEALTH_LABELS[s])
                for s in present]
    fig.legend(handles=handles, loc="outside right upper", title="activation layer / state",
               fontsize="small")
    fig.suptitle(experiment_title(runs, "dead and saturated units per layer"))
    return fig

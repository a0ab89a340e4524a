"""Second-order signals over training: sharpness (top Hessian eigenvalue) and gradient SNR per weight matrix."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradprobe import records as R
from gradprobe.plots.curves import experiment_title
from gradprobe.plots.select import group_runs, seed_spread, stat_table
from gradprobe.plots.style import arm_colors, dot_marker, layer_colors, new_figure, order_layers, positive
from gradprobe.store.reader import Run

__all__ = ["second_order"]


def second_order(runs: Sequence[Run]) -> Figure:
    """Top Hessian eigenvalue (top row) and gradient SNR of each weight matrix (bottom row, log) per arm.

    Requires: kind ``curvature`` stat ``top_hessian_eig`` and/or kind ``snr`` stat ``grad_snr``
    (``record.sharpness_every`` / ``record.snr_every``). Seeds of an arm are reduced to the median.

    Returns:
        Figure with two rows and one column per arm; colour = layer in the SNR row.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    eig = stat_table(runs, R.CURVATURE, R.TOP_HESSIAN_EIG)
    snr = stat_table(runs, R.SNR, R.GRAD_SNR, tensor="weight")
    layers = order_layers(snr["layer"])
    shades = layer_colors(layers)
    fig, axes = new_figure(2, len(groups), panel=(5.6, 3.0), sharex="col")
    for col, arm in enumerate(groups):
        top, bottom = axes[0][col], axes[1][col]
        own = eig[eig["arm"] == arm]
        if own.empty:
            top.text(0.5, 0.5, "sharpness not recorded", ha="center", transform=top.transAxes, color="grey")
        else:
            spread = seed_spread(own, ["step"])
            top.plot(spread["step"].to_numpy(), spread["median"].to_numpy(), color=colors[arm],
                     marker=dot_marker(len(spread)), markersize=3)
        top.set_title(f"arm: {arm}", color=colors[arm], fontweight="bold")
        own = snr[snr["arm"] == arm]
        for layer in layers:
            sel = own[own["layer"] == layer]
            if not sel.empty:
                spread = seed_spread(sel, ["step"])
                bottom.plot(spread["step"].to_numpy(), positive(spread["median"].to_numpy()),
                            color=shades[layer], marker=dot_marker(len(spread)), markersize=3)
        if own.empty:
            bottom.text(0.5, 0.5, "SNR not recorded", ha="center", transform=bottom.transAxes, color="grey")
        else:
            bottom.set_yscale("log")
        bottom.set_xlabel("optimizer step")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top Hessian eigenvalue")
    axes[1][0].set_ylabel("gradient SNR (per example)")
    if layers:
        fig.legend(handles=[Line2D([], [], color=shades[layer], label=layer) for layer in layers],
                   loc="outside right upper", title="weight matrix", fontsize="small")
    fig.suptitle(experiment_title(runs, "sharpness and gradient SNR"))
    return fig

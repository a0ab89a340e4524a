"""The GradScaler's loss-scale history per arm, with the steps it skipped for NaN/Inf gradients marked."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from gradprobe import records as R
from gradprobe.plots.curves import experiment_title
from gradprobe.plots.select import group_runs, stat_table
from gradprobe.plots.style import arm_colors, new_figure
from gradprobe.store.reader import Run

__all__ = ["loss_scale"]


def loss_scale(runs: Sequence[Run]) -> Figure:
    """Loss scale against step (log2 axis) per arm, one line per seed; skipped steps as red crosses.

    Requires: kind ``step`` stats ``loss_scale`` and ``skipped`` (a probe with ``scaler=``).

    Returns:
        Figure with one panel per arm.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = stat_table(runs, R.STEP, [R.LOSS_SCALE, R.SKIPPED], tensor=R.STEP_TENSOR)
    fig, axes = new_figure(1, len(groups))
    for col, arm in enumerate(groups):
        ax = axes[0][col]
        own = table[table["arm"] == arm].pivot_table(index=["run_id", "step"], columns="stat", values="value")
        for _, run in own.groupby(level="run_id"):
            steps = run.index.get_level_values("step").to_numpy()
            ax.step(steps, run[R.LOSS_SCALE].to_numpy(), where="post", color=colors[arm])
            if R.SKIPPED in run:
                hit = run[R.SKIPPED].to_numpy() > 0
                ax.plot(steps[hit], run[R.LOSS_SCALE].to_numpy()[hit], "x", color="tab:red",
                        label="skipped (NaN/Inf)" if not ax.get_legend_handles_labels()[0] else None)
        if own.empty:
            ax.text(0.5, 0.5, "no GradScaler records", ha="center", transform=ax.transAxes, color="grey")
        else:
            ax.set_yscale("log", base=2)
        ax.set_title(f"arm: {arm}", color=colors[arm], fontweight="bold")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    axes[0][0].set_ylabel("loss scale")
    fig.suptitle(experiment_title(runs, "GradScaler loss scale"))
    return fig

"""Gradient flow: gradient magnitude of each weight matrix against depth, every arm on one axes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.plots.curves import STAT_LABELS, experiment_title
from gradprobe.plots.select import group_runs, seed_spread, stat_table
from gradprobe.plots.style import arm_colors, new_figure, order_layers, positive
from gradprobe.store.reader import Run

__all__ = ["MOMENTS", "depth_table", "gradient_flow", "moment_steps"]

MOMENTS = ("init", "middle", "end")
Moment = str | int


def moment_steps(steps: Sequence[int], moments: Sequence[Moment]) -> list[int]:
    """Resolve moments to recorded steps.

    Args:
        steps: recorded steps (any order, repeats allowed).
        moments: ``"init"`` (first step), ``"middle"`` (the step nearest the midpoint),
            ``"end"`` (last step), or a step number (the nearest recorded step is used).

    Returns:
        One recorded step per moment.

    Raises:
        GradprobeError: on an unknown moment name or when nothing was recorded.
    """
    recorded = np.unique(np.asarray(steps, dtype=np.int64))
    if recorded.size == 0:
        raise GradprobeError("gradient_flow: no gradient records; record kind 'grad' to draw it")
    first, last = int(recorded[0]), int(recorded[-1])
    out = []
    for moment in moments:
        if isinstance(moment, (int, np.integer)) and not isinstance(moment, bool):
            target = float(moment)
        elif moment in MOMENTS:
            target = {"init": first, "middle": (first + last) / 2, "end": last}[str(moment)]
        else:
            raise GradprobeError(
                f"moments: {moment!r} is not a moment; allowed: {', '.join(MOMENTS)} or a step"
            )
        out.append(int(recorded[np.argmin(np.abs(recorded - target))]))
    return out


def depth_table(runs: Sequence[Run], stat: str = R.MEAN_ABS) -> pd.DataFrame:
    """Weight-gradient ``stat`` of every run with each layer's depth (1 = input side).

    Returns:
        Frame ``arm, seed, run_id, step, layer, tensor, stat, value, depth``; depth follows
        each run's own ``summary["weight_layers"]`` (else numeric module-path order).
    """
    parts = []
    for run in runs:
        table = stat_table([run], R.GRAD, stat, "weight")
        order = order_layers(table["layer"], run.summary.get("weight_layers"))
        parts.append(table.assign(depth=table["layer"].map({k: i + 1 for i, k in
                                                             enumerate(order)})))
    return pd.concat(parts, ignore_index=True)


def gradient_flow(runs: Sequence[Run], moments: Sequence[Moment] = MOMENTS,
                  stat: str = R.MEAN_ABS) -> Figure:
    """Mean |grad| of each weight matrix against depth, all arms on one axes, one panel per moment.

    A gradient that vanishes towards the input shows as a line falling to the left.

    Requires: kind ``grad``, stat ``mean_abs`` (or ``stat``), tensor ``weight``.

    Args:
        runs: the run group; per arm the line is the median over seeds, the band min to max.
        moments: ``"init"``, ``"middle"``, ``"end"`` or step numbers; the nearest recorded step
            of each run is used.
        stat: gradient statistic to draw.

    Returns:
        Figure with one log-y panel per distinct step (moments that resolve to the same
        recorded step share a panel) sharing the y axis; x = weight matrix depth.

    Raises:
        GradprobeError: on an unknown moment or when no gradient was recorded.
    """
    groups = group_runs(runs)
    colors = arm_colors(groups)
    table = depth_table(runs, stat)
    panels: dict[int, list[str]] = {}  # moments that resolve to one step share a panel
    for moment, step in zip(moments, moment_steps(table["step"].to_numpy(), moments)):
        panels.setdefault(step, []).append(str(moment) if isinstance(moment, str) else "step")
    deepest = next(r for r in runs if r.run_id == table.loc[table["depth"].idxmax(), "run_id"])
    names = order_layers(table.loc[table["run_id"] == deepest.run_id, "layer"],
                         deepest.summary.get("weight_layers"))
    fig, axes = new_figure(1, len(panels), panel=(4.4, 3.6), sharey=True)
    for ax, (target, labels) in zip(axes[0], panels.items()):
        picked = []
        for run in runs:
            own = table[table["run_id"] == run.run_id]
            if own.empty:
                continue
            step = moment_steps(own["step"].to_numpy(), [target])[0]
            picked.append(own[own["step"] == step])
        chosen = pd.concat(picked, ignore_index=True)
        for arm in groups:
            spread = seed_spread(chosen[chosen["arm"] == arm], ["depth"])
            if spread.empty:
                continue
            x = spread["depth"].to_numpy()
            ax.plot(x, positive(spread["median"].to_numpy()), "o-", color=colors[arm], label=arm)
            if spread["n"].max() > 1:
                ax.fill_between(x, positive(spread["lo"].to_numpy()),
                                positive(spread["hi"].to_numpy()), color=colors[arm], alpha=0.2,
                                linewidth=0)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(1, len(names) + 1), [f"{i + 1}\n{n}" for i, n in
                                                     enumerate(names)], fontsize="small")
        ax.set_xlabel("weight matrix (1 = input side)")
        named = " = ".join(dict.fromkeys(x for x in labels if x != "step"))
        ax.set_title(f"{named} (step {target})" if named else f"step {target}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{STAT_LABELS.get(stat, stat)} (log)")
    axes[0][-1].legend(title="arm", fontsize="small")
    several = any(len(g) > 1 for g in groups.values())
    spread_note = " (median over seeds, band min-max)" if several else ""
    fig.suptitle(experiment_title(runs, f"gradient flow through depth{spread_note}"))
    return fig

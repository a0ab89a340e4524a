"""Gradient flow: mean |grad| of each weight matrix and mean |delta| of its output against depth.

Every arm on one log axes per moment (initialisation, middle, end), with the mean-field prediction
at initialisation where the theory applies (an MLP of an elementwise activation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.plots.curves import STAT_LABELS, experiment_title
from gradprobe.plots.select import group_runs, seed_spread, stat_table
from gradprobe.plots.style import arm_colors, new_figure, order_layers, positive
from gradprobe.store.reader import Run
from gradprobe.theory import predict_for_run

__all__ = ["MOMENTS", "depth_table", "flow_profile", "gradient_flow", "moment_steps", "predicted_flow"]

_log = logging.getLogger(__name__)

MOMENTS = ("init", "middle", "end")
Moment = str | int
PROFILE_COLUMNS = ("moment", "step", "depth", "layer", "grad", "delta", "predicted")


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


def depth_table(runs: Sequence[Run], stat: str = R.MEAN_ABS, kind: str = R.GRAD) -> pd.DataFrame:
    """``stat`` of every run's weight gradients (or back-propagated errors) with each layer's depth.

    Args:
        runs: the runs.
        stat: statistic to read.
        kind: ``grad`` (tensor ``weight``) or ``delta``: the error dL/dz at the output of each
            weight matrix's module (tensor ``output``), where it was recorded.

    Returns:
        Frame ``arm, seed, run_id, step, layer, tensor, stat, value, depth``; depth (1 = input
        side) follows each run's own ``summary["weight_layers"]`` (else numeric module-path order).
    """
    parts = []
    for run in runs:
        grads = stat_table([run], R.GRAD, stat, "weight")
        order = order_layers(grads["layer"], run.summary.get("weight_layers"))
        table = grads if kind == R.GRAD else stat_table([run], kind, stat, "output")
        table = table[table["layer"].isin(order)]
        parts.append(table.assign(depth=table["layer"].map({k: i + 1 for i, k in enumerate(order)})))
    return pd.concat(parts, ignore_index=True)


def predicted_flow(run: Run, anchor: float) -> np.ndarray | None:
    """Mean-field mean |grad| per weight matrix at initialisation, anchored at the last hidden one.

    The theory (:func:`gradprobe.theory.predict_for_run`) puts the mean squared gradient of layer
    l at ``chi^(L-l)`` times layer L's in a stack of square layers; for zero-mean gradients of one
    shape mean |g| scales as the root mean square, so the line is ``anchor * chi^((L-1-l)/2)``.
    The output matrix (one row per output, not a square layer) is not predicted: its error is the
    loss's, so the line starts at the last hidden matrix.

    Args:
        run: a stored run of the preset MLP (its config has a ``model`` section).
        anchor: the last hidden weight matrix's measured mean |grad| at initialisation.

    Returns:
        Shape (L,), input side first, NaN for the output matrix; None where the theory does not
        apply (no MLP model config, an activation that is not elementwise, fewer than two weight
        matrices, or another depth than the run's weight matrices).
    """
    layers = run.summary.get("weight_layers") or []
    if "model" not in run.config or len(layers) < 2:
        return None
    try:
        result = predict_for_run(run)
    except GradprobeError as exc:
        _log.info("no mean-field prediction for %s: %s", run.run_id, exc)
        return None
    if result.depth != len(layers):
        return None
    ratio = np.asarray(result.per_layer_ratio, dtype=np.float64)  # (L,), chi^(L-l)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        line = anchor * np.sqrt(ratio / ratio[-2])  # chi^((L-1-l)/2): 1 at the last hidden matrix
    line[-1] = np.nan
    return line


def _at_step(table: pd.DataFrame, step: int) -> pd.Series:
    """Mean value per depth of one step's rows (one row per layer unless a step was recorded twice)."""
    return table[table["step"] == step].groupby("depth")["value"].mean()


def flow_profile(run: Run, moments: Sequence[Moment] = MOMENTS, stat: str = R.MEAN_ABS) -> pd.DataFrame:
    """One run's gradient flow: mean |grad| and mean |delta| per weight matrix at each moment.

    Requires: kind ``grad`` stat ``mean_abs`` (tensor ``weight``); kind ``delta`` stat ``mean_abs``
    (tensor ``output``) where recorded.

    Args:
        run: a stored run.
        moments: ``"init"``, ``"middle"``, ``"end"`` or step numbers (nearest recorded grad step).
        stat: the statistic of both gradients and errors.

    Returns:
        Frame ``moment, step, depth, layer, grad, delta, predicted`` (one row per weight matrix
        and moment); ``delta`` is NaN where no error was recorded at that step, ``predicted`` the
        mean-field line (:func:`predicted_flow`) on the ``init`` rows only, else NaN.

    Raises:
        GradprobeError: on an unknown moment or when no gradient was recorded.
    """
    grads = depth_table([run], stat)
    deltas = depth_table([run], stat, R.DELTA)
    names = grads.groupby("depth")["layer"].first() + ".weight"
    parts = []
    for moment, step in zip(moments, moment_steps(grads["step"].to_numpy(), moments)):
        grad = _at_step(grads, step)
        part = pd.DataFrame({"moment": str(moment), "step": step, "depth": grad.index,
                             "layer": names.loc[grad.index].to_numpy(), "grad": grad.to_numpy()})
        part["delta"] = part["depth"].map(_at_step(deltas, step)).astype(np.float64)
        predicted = predicted_flow(run, float(grad.iloc[-2])) if moment == "init" and len(grad) > 1 else None
        part["predicted"] = (predicted if predicted is not None and len(predicted) == len(part)
                             else np.nan)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[list(PROFILE_COLUMNS)]


def _draw_arm(ax: Axes, chosen: pd.DataFrame, deltas: pd.DataFrame, arm: str, color: str) -> None:
    """One arm's median mean |grad| (solid, band min-max over seeds) and mean |delta| (dashed)."""
    spread = seed_spread(chosen[chosen["arm"] == arm], ["depth"])
    if spread.empty:
        return
    x = spread["depth"].to_numpy()
    ax.plot(x, positive(spread["median"].to_numpy()), "o-", color=color, label=arm)
    if spread["n"].max() > 1:
        ax.fill_between(x, positive(spread["lo"].to_numpy()), positive(spread["hi"].to_numpy()),
                        color=color, alpha=0.2, linewidth=0)
    errors = seed_spread(deltas[deltas["arm"] == arm], ["depth"])
    if not errors.empty:
        ax.plot(errors["depth"].to_numpy(), positive(errors["median"].to_numpy()), "s--", color=color,
                markerfacecolor="none", label=f"{arm}: |delta|")


def _draw_prediction(ax: Axes, chosen: pd.DataFrame, group: list[Run], arm: str, color: str) -> None:
    """The arm's mean-field line at initialisation, anchored at its median last hidden gradient."""
    spread = seed_spread(chosen[chosen["arm"] == arm], ["depth"])
    if len(spread) < 2:
        return
    line = predicted_flow(group[0], float(spread["median"].iloc[-2]))
    if line is not None and len(line) == len(spread):
        ax.plot(spread["depth"].to_numpy(), positive(line), ":", color=color, linewidth=2,
                label=f"{arm}: mean field")


def _picked(table: pd.DataFrame, runs: Sequence[Run], target: int) -> pd.DataFrame:
    """Each run's rows at its recorded step nearest ``target``."""
    picked = []
    for run in runs:
        own = table[table["run_id"] == run.run_id]
        if own.empty:
            continue
        step = moment_steps(own["step"].to_numpy(), [target])[0]
        picked.append(own[own["step"] == step])
    return pd.concat(picked, ignore_index=True) if picked else table.iloc[:0]


def gradient_flow(runs: Sequence[Run], moments: Sequence[Moment] = MOMENTS,
                  stat: str = R.MEAN_ABS) -> Figure:
    """Mean |grad| and mean |delta| of each weight matrix against depth, all arms on one axes per moment.

    A gradient that vanishes towards the input shows as a line falling to the left. The dashed
    line is the back-propagated error at the matrix's output (where recorded), the dotted line
    the mean-field prediction at initialisation (:func:`predicted_flow`, where it applies).

    Requires: kind ``grad``, stat ``mean_abs`` (or ``stat``), tensor ``weight``; optionally kind
    ``delta`` with the same stat, tensor ``output``.

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
    errors = depth_table(runs, stat, R.DELTA)
    panels: dict[int, list[str]] = {}  # moments that resolve to one step share a panel
    for moment, step in zip(moments, moment_steps(table["step"].to_numpy(), moments)):
        panels.setdefault(step, []).append(str(moment) if isinstance(moment, str) else "step")
    deepest = next(r for r in runs if r.run_id == table.loc[table["depth"].idxmax(), "run_id"])
    names = order_layers(table.loc[table["run_id"] == deepest.run_id, "layer"],
                         deepest.summary.get("weight_layers"))
    fig, axes = new_figure(1, len(panels), panel=(4.4, 3.6), sharey=True)
    for ax, (target, labels) in zip(axes[0], panels.items()):
        chosen = _picked(table, runs, target)
        deltas = errors[errors.set_index(["run_id", "step"]).index.isin(
            chosen.set_index(["run_id", "step"]).index.unique())]  # errors at the same steps
        for arm, group in groups.items():
            _draw_arm(ax, chosen, deltas, arm, colors[arm])
            if "init" in labels:
                _draw_prediction(ax, chosen, group, arm, colors[arm])
        ax.set_yscale("log")
        ax.set_xticks(np.arange(1, len(names) + 1), [f"{i + 1}\n{n}" for i, n in
                                                     enumerate(names)], fontsize="small")
        ax.set_xlabel("weight matrix (1 = input side)")
        named = " = ".join(dict.fromkeys(x for x in labels if x != "step"))
        ax.set_title(f"{named} (step {target})" if named else f"step {target}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{STAT_LABELS.get(stat, stat)} (log)\ndashed: mean |dL/dz| of its output")
    shown = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # the mean field is on one panel only
    fig.legend(list(shown.values()), list(shown), title="arm", fontsize="small", loc="outside right upper")
    several = any(len(g) > 1 for g in groups.values())
    spread_note = " (median over seeds, band min-max)" if several else ""
    fig.suptitle(experiment_title(runs, f"gradient flow through depth{spread_note}"))
    return fig

"""Pick the records a figure needs out of a group of runs, as tidy frames with arm and seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradprobe.errors import GradprobeError
from gradprobe.store.reader import Run

__all__ = [
    "arm_of",
    "group_runs",
    "metrics_table",
    "seed_spread",
    "stat_table",
    "weight_layer_order",
]


def arm_of(run: Run) -> str:
    """The run's arm (``meta["arm"]``), or its id when it has none."""
    return str(run.meta.get("arm") or run.run_id)


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Group runs by arm in order of first appearance.

    Raises:
        GradprobeError: if ``runs`` is empty.
    """
    if not runs:
        raise GradprobeError("runs: the list is empty; pass at least one Run (see load_run)")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(arm_of(run), []).append(run)
    return groups


def weight_layer_order(runs: Sequence[Run]) -> list[str] | None:
    """The longest ``summary["weight_layers"]`` among the runs (depth order), None if absent."""
    found = [list(r.summary.get("weight_layers") or []) for r in runs]
    longest = max(found, key=len, default=[])
    return longest or None


def stat_table(runs: Sequence[Run], kind: str, stat: str | Sequence[str],
               tensor: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Concatenate one kind's stats of every run with its arm and seed.

    Args:
        runs: the run group.
        kind: record kind, e.g. ``records.GRAD``.
        stat: one stat name or several.
        tensor: keep only this tensor (or these), e.g. ``"weight"``; None keeps all.

    Returns:
        Frame ``arm, seed, run_id, step, layer, tensor, stat, value``; empty when nothing matched.
    """
    parts = []
    tensors = [tensor] if isinstance(tensor, str) else tensor
    for run in runs:
        frame = run.frame(kind=kind, stat=stat)
        if tensors is not None:
            frame = frame[frame["tensor"].isin(tensors)]
        parts.append(frame.assign(arm=arm_of(run), seed=run.meta.get("seed"), run_id=run.run_id))
    columns = ["arm", "seed", "run_id", "step", "layer", "tensor", "stat", "value"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def metrics_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Every run's metrics with arm and seed; a repeated (step, split, metric) keeps the last.

    The trainer evaluates once more after the last step, which can repeat the final step.
    """
    parts = []
    for run in runs:
        metrics = run.metrics().drop_duplicates(["step", "split", "metric"], keep="last")
        parts.append(metrics.assign(arm=arm_of(run), seed=run.meta.get("seed"), run_id=run.run_id))
    columns = ["arm", "seed", "run_id", "step", "epoch", "split", "metric", "value"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def seed_spread(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Median, min and max of ``value`` over runs (seeds) for each ``by`` group.

    Each run contributes its own mean per group first, so repeated rows within a run do not
    count as seeds.

    Returns:
        Frame ``*by, median, lo, hi, n`` (n = number of runs), sorted by ``by``.
    """
    per_run = frame.groupby(["run_id", *by], sort=False)["value"].mean().reset_index()
    grouped = per_run.groupby(list(by))["value"]
    out = pd.DataFrame({
        "median": grouped.median(),
        "lo": grouped.min(),
        "hi": grouped.max(),
        "n": grouped.size(),
    }).reset_index()
    out["median"] = out["median"].astype(np.float64)
    return out

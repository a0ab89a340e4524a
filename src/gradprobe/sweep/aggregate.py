"""Read a sweep's runs back from the store and pool them over seeds: mean, 95% t-interval and verdict counts."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gradprobe import records as R
from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.verdicts import PRECEDENCE
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import load_run, read_run_docs
from gradprobe.sweep.grid import Sweep, config_hash

#: Summary values pooled per grid point (log10_vanishing_factor is derived from vanishing_factor).
METRICS = ("final_loss", "train_accuracy", "test_accuracy", "vanishing_factor",
           "vanishing_factor_median", "log10_vanishing_factor")
#: Run statuses that count as a completed configuration (a diverged run would diverge again).
DONE = (R.FINISHED, R.DIVERGED)
#: Resolved settings added to every row so figures can use them whether or not they were axes.
EXTRA = ("model.activation", "model.init", "depth")
CONFIDENCE = 0.95
UNDIAGNOSED = "undiagnosed"  # a run without the statistics diagnose needs (e.g. recording off)


def finished_index(store: str | os.PathLike[str] | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Config hash -> (run id, run.json) of every completed run in the store; the newest wins.

    The hash is recomputed from the stored config, so it cannot disagree with what was run.
    """
    index: dict[str, tuple[str, dict[str, Any]]] = {}
    docs = [d for d in read_run_docs(store) if d[1].get("status") in DONE and d[1].get("config")]
    for run_id, doc in sorted(docs, key=lambda d: (str((d[1].get("meta") or {}).get("created")), d[0])):
        index[config_hash(doc["config"])] = (run_id, doc)
    return index


def _cell(value: Any) -> Any:
    """Lists and dicts become JSON text so they can be grouped on."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _number(value: Any) -> float:
    """A summary value as float; None (e.g. no test split) becomes NaN."""
    return math.nan if value is None else float(value)


def _verdict(run_id: str, store: str | os.PathLike[str] | None) -> str:
    """The overall ``diagnose`` verdict of a stored run, or :data:`UNDIAGNOSED`."""
    try:
        return diagnose(load_run(run_id, store)).verdict
    except GradprobeError:
        return UNDIAGNOSED


def verdict_counts(verdicts: Sequence[str] | pd.Series) -> str:
    """``"healthy 5, dead 2, exploding 1"``: how many runs got each verdict, most frequent first."""
    counts = Counter(verdicts)
    # ties: the more severe first; undiagnosed last
    rank = sorted(counts, key=lambda v: (-counts[v], PRECEDENCE.index(v) if v in PRECEDENCE else len(PRECEDENCE)))
    return ", ".join(f"{v} {counts[v]}" for v in rank)


def _row(run_id: str, doc: dict[str, Any], store: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Identity, resolved settings, overall verdict and metric values of one run."""
    cfg, summary = doc["config"], doc.get("summary") or {}
    model = cfg.get("model") or {}
    depth = len(model["hidden"]) if model.get("hidden") else model.get("depth")
    row: dict[str, Any] = {"run_id": run_id, "arm": cfg.get("arm"), "seed": cfg.get("seed"),
                           "status": doc.get("status"), "verdict": _verdict(run_id, store),
                           "model.activation": model.get("activation"),
                           "model.init": model.get("init"), "depth": depth}
    for name in METRICS[:-1]:
        row[name] = _number(summary.get(name))
    factor = row["vanishing_factor"]
    row["log10_vanishing_factor"] = math.log10(factor) if factor > 0 else math.nan
    return row


def collect(sweep: Sweep, store: str | os.PathLike[str] | None) -> pd.DataFrame:
    """One row per configuration of ``sweep`` that has a completed run in the store.

    Returns:
        Frame with run_id, arm, point, seed, status, verdict (``diagnose``'s overall verdict), one column
        per axis path, EXTRA, METRICS.
    """
    index = finished_index(store)
    rows = []
    for item in sweep.items:
        if item.config_hash in index:
            row = _row(*index[item.config_hash], store)
            row["point"] = item.point
            row.update({path: _cell(value) for path, value in item.values.items()})
            rows.append(row)
    axes = [a.path for a in sweep.axes]
    columns = ["run_id", "arm", "point", "seed", "status", "verdict", *axes, *[c for c in EXTRA if c not in axes],
               *METRICS]
    return pd.DataFrame(rows, columns=columns)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    else:
        out[prefix] = _cell(value)


def collect_by_id(sweep_id: str, store: str | os.PathLike[str] | None) -> pd.DataFrame:
    """Completed runs written under ``sweep_id`` (their ``batch``); axes are the config fields that vary.

    Runs a sweep skipped because an earlier sweep had finished them carry that sweep's id:
    ``collect`` (by config hash) finds those too.
    """
    docs = [(run_id, doc) for run_id, doc in finished_index(store).values()
            if (doc.get("meta") or {}).get("batch") == sweep_id]
    flat = []
    for _, doc in docs:
        out: dict[str, Any] = {}
        _flatten("", {k: v for k, v in doc["config"].items() if k not in ("experiment", "arm", "seed")}, out)
        flat.append(out)
    keys = sorted({k for f in flat for k in f})
    axes = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1]
    rows = []
    for (run_id, doc), f in zip(docs, flat):
        row = _row(run_id, doc, store)
        row["point"] = ",".join(f"{k}={f.get(k)}" for k in axes)
        row.update({k: f.get(k) for k in axes})
        rows.append(row)
    columns = ["run_id", "arm", "point", "seed", "status", "verdict", *axes, *[c for c in EXTRA if c not in axes],
               *METRICS]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["arm", "point", "seed"], kind="stable", ignore_index=True)


def interval(values: Sequence[float] | np.ndarray) -> tuple[int, float, float, int]:
    """Finite count, mean and 95% Student-t half-width of ``values``, and how many were NaN/inf.

    The half-width is ``t(0.975, n - 1) * s / sqrt(n)`` with the sample standard deviation ``s``;
    NaN when fewer than two finite values remain. NaN/inf values are left out and counted.
    """
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    if n < 2:
        return n, mean, math.nan, int(arr.size - n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * finite.std(ddof=1) / math.sqrt(n))
    return n, mean, half, int(arr.size - n)


def aggregate(runs: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Pool runs over seeds per grid point.

    Args:
        runs: a ``collect`` frame.
        by: grouping columns; default every column between ``status`` and the metrics.

    Returns:
        One row per group in first-seen order: the group columns, ``n_runs``, ``n_diverged``, ``verdicts``
        (:func:`verdict_counts` of the runs' overall verdicts) and per
        metric ``<m>_mean``, ``<m>_ci`` (95% half-width), ``<m>_n`` (finite values) and
        ``<m>_nonfinite`` (NaN, inf or missing, e.g. test accuracy without a test split).
    """
    if by is None:
        by = ["arm", "point"] + [c for c in runs.columns if c not in
                                 ("run_id", "arm", "point", "seed", "status", "verdict", *METRICS)]
    rows = []
    for key, grp in runs.groupby(list(by), sort=False, dropna=False):
        row: dict[str, Any] = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_runs"], row["n_diverged"] = len(grp), int((grp["status"] == R.DIVERGED).sum())
        row["verdicts"] = verdict_counts(grp["verdict"])
        for name in METRICS:
            n, mean, half, bad = interval(grp[name].to_numpy())
            row.update({f"{name}_mean": mean, f"{name}_ci": half, f"{name}_n": n, f"{name}_nonfinite": bad})
        rows.append(row)
    stat_cols = [f"{m}_{s}" for m in METRICS for s in ("mean", "ci", "n", "nonfinite")]
    return pd.DataFrame(rows, columns=[*by, "n_runs", "n_diverged", "verdicts", *stat_cols])


def aggregate_sweep(sweep: Sweep, store: str | os.PathLike[str] | None) -> pd.DataFrame:
    """``aggregate(collect(sweep, store))``: the per-point table of a sweep."""
    return aggregate(collect(sweep, store))


__all__ = ["CONFIDENCE", "DONE", "EXTRA", "METRICS", "UNDIAGNOSED", "aggregate", "aggregate_sweep", "collect",
           "collect_by_id", "finished_index", "interval", "verdict_counts"]

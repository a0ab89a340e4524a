"""The one interface every sink implements, and the pure encoding the tracker sinks share.

A sink receives a run's records as they are made: tidy stats, histogram and metric frames
(:mod:`gradprobe.records`), then the final status and summary. Tracker keys are
``<kind>/<stat>/<layer>.<tensor>`` (``<kind>/hist/<layer>.<tensor>`` for histograms,
``metrics/<split>/<metric>`` for the trainer's metrics, ``summary/<key>`` for the run's summary).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from gradprobe.blocks import Sink

__all__ = ["RunSink", "feed", "hist_key", "metric_rows", "scalar_rows", "stat_rows", "summary_scalars"]

Rows = dict[int, dict[str, float]]  # step -> {key: value}


class RunSink(Protocol):
    """Where a run's records go as they are made: the run store, TensorBoard, MLflow, W&B, ..."""

    def add_stats(self, df: pd.DataFrame) -> None: ...
    def add_hists(self, df: pd.DataFrame) -> None: ...
    def add_metrics(self, df: pd.DataFrame) -> None: ...
    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None: ...


def feed(*sinks: RunSink) -> Sink:
    """Return a ``Probe(sink=...)`` callable that hands every flushed frame to ``sinks``."""
    def _sink(stats: pd.DataFrame, hists: pd.DataFrame) -> None:
        for sink in sinks:
            sink.add_stats(stats)
            if len(hists):
                sink.add_hists(hists)
    return _sink


def _names(layer: pd.Series, tensor: pd.Series) -> pd.Series:
    """``layer.tensor`` per row, or ``tensor`` alone for the root module (layer ``""``)."""
    layer, tensor = layer.astype(str), tensor.astype(str)
    return (layer + "." + tensor).where(layer != "", tensor)


def scalar_rows(steps: Sequence[int] | np.ndarray, keys: Sequence[str], values: Sequence[float] | np.ndarray) -> Rows:
    """Group ``(step, key, value)`` triples by step, in step order, values as Python floats."""
    rows: Rows = {}
    for step, key, value in zip(np.asarray(steps).tolist(), keys, np.asarray(values, np.float64).tolist()):
        rows.setdefault(int(step), {})[key] = value
    return dict(sorted(rows.items()))


def stat_rows(df: pd.DataFrame) -> Rows:
    """A STAT_COLUMNS frame as ``{step: {"<kind>/<stat>/<layer>.<tensor>": value}}``."""
    keys = df["kind"].astype(str) + "/" + df["stat"].astype(str) + "/" + _names(df["layer"], df["tensor"])
    return scalar_rows(df["step"].to_numpy(), keys.tolist(), df["value"].to_numpy())


def metric_rows(df: pd.DataFrame) -> Rows:
    """A METRIC_COLUMNS frame as ``{step: {"metrics/<split>/<metric>": value}}``."""
    keys = "metrics/" + df["split"].astype(str) + "/" + df["metric"].astype(str)
    return scalar_rows(df["step"].to_numpy(), keys.tolist(), df["value"].to_numpy())


def hist_key(kind: str, layer: str, tensor: str) -> str:
    """The key of one tensor's histogram, e.g. ``grad/hist/layers.0.weight``."""
    return f"{kind}/hist/{layer}.{tensor}" if layer else f"{kind}/hist/{tensor}"


def summary_scalars(summary: dict[str, Any] | None) -> dict[str, float]:
    """The finite numbers of a run summary as ``{"summary/<key>": value}`` (lists, text and None are left out)."""
    out: dict[str, float] = {}
    for key, value in (summary or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"summary/{key}"] = float(value)
    return out


"""Fixtures for the report tests: small synthetic runs written straight into a store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gradprobe import records as R
from gradprobe.store import RunWriter, new_run_id
from gradprobe.store.reader import Run


def synthetic_frames(
    layers: Sequence[str], n_steps: int, seed: int, hist_every: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (stats, metrics, hists) of a fake run: grad/weight stats per weight and bias,
    activation/delta stats per layer output, loss/accuracy every 5 steps, grad histograms."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(n_steps):
        for depth, layer in enumerate(layers):
            scale = 10.0 ** (-depth - seed)  # deeper = smaller, like a vanishing gradient
            for tensor in ("weight", "bias"):
                rows += [(step, layer, tensor, R.GRAD, s, scale * rng.uniform(0.5, 2))
                         for s in (R.MEAN_ABS, R.NORM, R.MEAN)]
                rows += [(step, layer, tensor, R.WEIGHT, s, rng.uniform(0.5, 2)) for s in (R.NORM, R.STD)]
            rows += [(step, layer, "output", R.ACTIVATION, R.MEAN, rng.normal()),
                     (step, layer, "output", R.DELTA, R.NORM, scale * rng.uniform(0.5, 2))]
    stats = pd.DataFrame(rows, columns=list(R.STAT_COLUMNS))
    metrics = pd.DataFrame(
        [(s, s // 5, R.TRAIN, m, 1 / (s + 1) if m == R.LOSS else s / n_steps)
         for s in range(0, n_steps, 5) for m in (R.LOSS, R.ACCURACY)],
        columns=list(R.METRIC_COLUMNS))
    hist_rows = []
    for step in range(0, n_steps, hist_every):
        for layer in layers:
            edges = np.linspace(-1 - step, 1 + step, 11)
            hist_rows.append((step, layer, "weight", R.GRAD, edges, rng.integers(0, 50, 10)))
    return stats, metrics, pd.DataFrame(hist_rows, columns=list(R.HIST_COLUMNS))


@pytest.fixture
def make_run(_private_store: Path) -> Callable[..., Run]:
    """Return ``make(experiment, arm, seed, batch=..., layers=..., n_steps=..., created=...)``."""

    def make(experiment: str = "exp", arm: str = "a", seed: int = 0, *, batch: str | None = "b1",
             layers: Sequence[str] = ("layers.0", "layers.2"), n_steps: int = 20,
             created: float = 1.8e9, config: dict[str, Any] | None = None) -> Run:
        run_id = new_run_id(experiment, arm, seed, clock=lambda: created)
        writer = RunWriter(_private_store, run_id, config=config or {"model": {"depth": 2}, "arm": arm},
                           env={"python": "3.x"}, clock=lambda: created,
                           meta={"experiment": experiment, "arm": arm, "seed": seed, "batch": batch})
        stats, metrics, hists = synthetic_frames(layers, n_steps, seed)
        with writer:
            writer.add_stats(stats)
            writer.add_metrics(metrics)
            writer.add_hists(hists)
            writer.finish(R.FINISHED, {"final_loss": 0.5})
        return Run(writer.path)

    return make


@pytest.fixture
def store(_private_store: Path) -> Path:
    """The test's private store root."""
    return _private_store

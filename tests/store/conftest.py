"""Fixtures for the store tests: a temporary store root and tidy-frame factories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradprobe.records import (
    DEFAULT_GRAD_STATS,
    GRAD,
    HIST_COLUMNS,
    METRIC_COLUMNS,
    STAT_COLUMNS,
    WEIGHT,
)
from gradprobe.store import RunWriter


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty store root."""
    return tmp_path / "store"


def _make_stats(
    n_layers: int = 3, n_steps: int = 4, step0: int = 0, seed: int = 0, n_stats: int = 7
) -> pd.DataFrame:
    """Return a tidy stats frame: layers x 2 kinds x n_stats stats x steps, random values."""
    rng = np.random.default_rng(seed)
    stats = DEFAULT_GRAD_STATS[:n_stats]
    rows = [
        (step, f"layers.{i}", "weight", kind, stat)
        for step in range(step0, step0 + n_steps)
        for i in range(n_layers)
        for kind in (GRAD, WEIGHT)
        for stat in stats
    ]
    frame = pd.DataFrame(rows, columns=list(STAT_COLUMNS[:-1]))
    frame["value"] = rng.standard_normal(len(frame)) * 10.0 ** rng.integers(-8, 4, len(frame))
    return frame


def _make_metrics(n_steps: int = 3) -> pd.DataFrame:
    """Return a metrics frame with train and test loss per step."""
    rows = [
        (s, s // 2, split, "loss", 1.0 / (s + 1))
        for s in range(n_steps)
        for split in ("train", "test")
    ]
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def _make_hists(n_steps: int = 2, bins: int = 4) -> pd.DataFrame:
    """Return a hists frame with one histogram per step."""
    rows = [
        (
            s,
            "layers.0",
            "weight",
            GRAD,
            np.linspace(-1.0, 1.0, bins + 1),
            np.arange(bins, dtype=np.int64) + s,
        )
        for s in range(n_steps)
    ]
    return pd.DataFrame(rows, columns=list(HIST_COLUMNS))


@pytest.fixture
def make_stats() -> Callable[..., pd.DataFrame]:
    """Factory: ``make_stats(n_layers=3, n_steps=4, step0=0, seed=0, n_stats=7)``."""
    return _make_stats


@pytest.fixture
def make_metrics() -> Callable[..., pd.DataFrame]:
    """Factory of metrics frames: ``make_metrics(n_steps=3)``."""
    return _make_metrics


@pytest.fixture
def make_hists() -> Callable[..., pd.DataFrame]:
    """Factory of hists frames: ``make_hists(n_steps=2, bins=4)``."""
    return _make_hists


@pytest.fixture
def new_writer(root: Path) -> Callable[..., RunWriter]:
    """Factory of RunWriters in ``root`` with small defaults."""

    def factory(run_id: str = "exp.relu.s0.20260101-000000.abcd", **kwargs: object) -> RunWriter:
        meta = kwargs.pop("meta", {"experiment": "exp", "arm": "relu", "seed": 0})
        return RunWriter(
            root, run_id, config={"depth": 3, "lr": 0.1}, env={"torch": "x"}, meta=meta, **kwargs
        )

    return factory

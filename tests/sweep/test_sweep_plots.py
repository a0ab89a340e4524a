"""Sweep figures draw the aggregate table's numbers: line data, bands, heatmap cells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradprobe.plots.sweep import accuracy_curve, depth_curve, heatmap
from gradprobe.sweep.aggregate import aggregate


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for act, base in (("sigmoid", 10.0), ("tanh", 1.0)):
        for depth in (2, 4, 8):
            for seed in range(3):
                factor = base * depth * float(rng.lognormal(0, 0.3))
                rows.append({"run_id": f"{act}{depth}{seed}", "arm": "default", "point": f"{act},{depth}",
                             "seed": seed, "status": "finished", "verdict": "healthy", "model.activation": act,
                             "model.depth": depth,
                             "model.init": "normal:1", "depth": depth, "final_loss": 0.5,
                             "train_accuracy": float(rng.uniform(0.4, 1.0)), "test_accuracy": math.nan,
                             "vanishing_factor": factor, "vanishing_factor_median": factor,
                             "log10_vanishing_factor": math.log10(factor)})
    return aggregate(pd.DataFrame(rows))


def test_depth_curve_plots_geometric_means_on_log_axis() -> None:
    agg = _table()
    ax = depth_curve(agg).axes[0]
    assert ax.get_yscale() == "log"
    lines = [line for line in ax.get_lines() if line.get_label() in ("sigmoid", "tanh")]
    assert [line.get_label() for line in lines] == ["sigmoid", "tanh"]
    for line in lines:
        rows = agg[agg["model.activation"] == line.get_label()].sort_values("depth")
        np.testing.assert_allclose(line.get_xdata(), rows["depth"])
        np.testing.assert_allclose(line.get_ydata(), 10 ** rows["log10_vanishing_factor_mean"])
    assert len(ax.collections) == 2  # one CI band per line


def test_accuracy_curve_values() -> None:
    agg = _table()
    ax = accuracy_curve(agg).axes[0]
    line = ax.get_lines()[0]
    rows = agg[agg["model.activation"] == "sigmoid"].sort_values("depth")
    np.testing.assert_allclose(line.get_ydata(), rows["train_accuracy_mean"])


def test_heatmap_cells_and_duplicate_cells() -> None:
    agg = _table()
    fig = heatmap(agg, "model.depth", "model.activation", "train_accuracy")
    cells = fig.axes[0].get_images()[0].get_array()
    want = agg.pivot(index="model.activation", columns="model.depth", values="train_accuracy_mean")
    np.testing.assert_allclose(np.asarray(cells), want.loc[["sigmoid", "tanh"], [2, 4, 8]].to_numpy())
    with pytest.raises(ValueError, match="also varying: model.activation"):
        heatmap(agg, "model.depth", "model.init")

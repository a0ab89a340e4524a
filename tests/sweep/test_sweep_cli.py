"""``gradprobe sweep``: one JSON object on stdout, figures with --out, resumable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
from typer.testing import CliRunner

from gradprobe.cli.main import app
from gradprobe.store.layout import run_ids
from gradprobe.sweep import aggregate_sweep, load_sweep


def test_json_is_one_object_matching_the_store(tiny: str, tmp_path: Path) -> None:
    store, figs = tmp_path / "store", tmp_path / "figs"
    args = ["sweep", tiny, "--store", str(store), "--json", "--out", str(figs)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"sweep", "points", "runs"} and doc["runs"] == 8 and len(doc["points"]) == 4
    table = aggregate_sweep(load_sweep(tiny), store)
    assert doc["sweep"] == load_sweep(tiny).sweep_id
    for point, (_, row) in zip(doc["points"], table.iterrows()):
        assert point["point"] == row["point"] and point["n_runs"] == 2
        assert point["final_loss_mean"] == row["final_loss_mean"]
        assert point["test_accuracy_mean"] is None  # NaN (no test split) is null in JSON
    for name in ("depth-curve", "accuracy-depth", "heatmap-accuracy", "heatmap-vanishing"):
        image = matplotlib.image.imread(figs / f"{name}.png")  # read back by matplotlib's PNG reader
        assert image.ndim == 3 and image.shape[0] > 100 and np.ptp(image) > 0

    again = CliRunner().invoke(app, ["sweep", tiny, "--store", str(store)])
    assert again.exit_code == 0 and "trained 0, already done 8" in again.stderr
    assert "activation=tanh,depth=3" in again.stdout and len(run_ids(store)) == 8

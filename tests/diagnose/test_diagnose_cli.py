"""``gradprobe diagnose RUN [--json]`` on stored runs: the schema, threshold overrides, diverged runs, bad input."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradprobe import records as R
from gradprobe.cli.main import app, main
from gradprobe.store.reader import list_runs
from gradprobe.store.writer import RunWriter

runner = CliRunner()


def _diagnose_json(run_id: str, *extra: str) -> dict:
    result = runner.invoke(app, ["diagnose", run_id, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_schema(doc: dict) -> None:
    assert set(doc) == {"verdict", "layers"}
    verdicts = ("healthy", "vanishing", "exploding", "dead", "saturated", "stalled", "unstable", "frozen")
    assert doc["verdict"] in verdicts and doc["layers"]
    for entry in doc["layers"]:
        assert set(entry) == {"layer", "verdict", "evidence", "remedies"} and entry["verdict"] in verdicts
        assert isinstance(entry["layer"], str) and isinstance(entry["evidence"], str) and entry["evidence"]
        assert isinstance(entry["remedies"], list) and all(isinstance(r, str) for r in entry["remedies"])


@pytest.fixture(scope="module")
def circles_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """circles-deep, 3 epochs, gradients recorded every step, in a store of its own."""
    store = tmp_path_factory.mktemp("circles") / "store"
    result = runner.invoke(app, ["run", "circles-deep", "--set", "train.epochs=3", "--set", "record.every=1",
                                 "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    runs = list_runs(store)
    return store, dict(zip(runs["arm"], runs["run_id"]))


def test_json_has_exactly_the_schema(circles_runs) -> None:
    store, ids = circles_runs
    for arm, run_id in ids.items():
        doc = _diagnose_json(run_id, "--store", str(store))
        _check_schema(doc)
        assert [e["layer"] for e in doc["layers"]] == [f"layers.{i}.weight" for i in range(0, 10, 2)], arm
    assert _diagnose_json(ids["sigmoid"], "--store", str(store))["verdict"] == "vanishing"
    assert _diagnose_json(ids["relu"], "--store", str(store))["verdict"] == "healthy"


def test_threshold_override_changes_the_verdict(circles_runs) -> None:
    store, ids = circles_runs
    doc = _diagnose_json(ids["sigmoid"], "--store", str(store), "--vanishing-ratio", "0.0001")
    assert doc["verdict"] != "vanishing"
    doc = _diagnose_json(ids["relu"], "--store", str(store), "--exploding-ratio", "1.01")
    assert doc["verdict"] == "exploding"


def test_text_output_names_verdict_and_layers(circles_runs) -> None:
    store, ids = circles_runs
    result = runner.invoke(app, ["diagnose", ids["sigmoid"], "--store", str(store)])
    assert result.exit_code == 0
    assert result.stdout.startswith("gradprobe diagnosis: vanishing")
    assert "layers.0.weight" in result.stdout and "1. use a ReLU-family activation" in result.stdout


def _stored(store: Path, run_id: str, stats, status: str, summary: dict) -> None:
    with RunWriter(store, run_id, config={}, env={}, meta={"experiment": "t", "arm": "a", "seed": 0}) as w:
        if stats is not None:
            w.add_stats(stats)
        w.finish(status, summary)


def test_diverged_run_is_unstable_with_step_and_first_layer(cases, tmp_path: Path) -> None:
    model = cases.mlp(nn.ReLU, 3, 16, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01), steps=12, poison=5)
    _stored(tmp_path, "nan-run", probe.frame(), R.DIVERGED,
            {"steps": 12, "first_nonfinite": probe.first_nonfinite, "last_batch_loss": math.nan,
             "weight_layers": ["0.weight", "2.weight", "4.weight", "6.weight"]})
    doc = _diagnose_json("nan-run", "--store", str(tmp_path))
    _check_schema(doc)
    assert doc["verdict"] == "unstable"
    first = doc["layers"][0]
    assert first["verdict"] == "unstable" and first["evidence"].startswith("the run diverged after 12 steps")
    assert f"from step {rec.nonfinite_step}" in first["evidence"]
    assert first["layer"] in ("0.weight", "2.weight")


def test_diverged_before_any_record_is_unstable_loss(tmp_path: Path) -> None:
    _stored(tmp_path, "early-nan", None, R.DIVERGED, {"steps": 3, "last_batch_loss": math.inf})
    doc = _diagnose_json("early-nan", "--store", str(tmp_path))
    assert doc == {"verdict": "unstable", "layers": [doc["layers"][0]]}
    assert doc["layers"][0]["layer"] == "(loss)" and "after 3 steps" in doc["layers"][0]["evidence"]


@pytest.mark.parametrize("args, field", [(["--vanishing-ratio", "2"], "vanishing_ratio"),
                                         (["--min-window", "0"], "min_window")])
def test_bad_threshold_is_one_line_and_exit_2(args, field, tmp_path: Path, monkeypatch, capsys) -> None:
    _stored(tmp_path, "some-run", None, R.FINISHED, {})
    monkeypatch.setattr(sys, "argv", ["gradprobe", "diagnose", "some-run", "--store", str(tmp_path), *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"thresholds.{field}" in err

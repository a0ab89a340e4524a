"""MLflowSink: what MLflow's own client reads back from a local file store equals the run store."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gradprobe import records as R
from gradprobe.cli.main import app
from gradprobe.errors import GradprobeError
from gradprobe.sinks.mlflow import MLflowSink, mlflow_key, tracking_uri
from gradprobe.store.reader import Run, load_run
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_one

mlflow = pytest.importorskip("mlflow")
MlflowClient = mlflow.MlflowClient


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local MLflow file store (MLflow 3 keeps it behind MLFLOW_ALLOW_FILE_STORE; SQLite needs full mlflow)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _history(client: Any, run_id: str) -> dict[tuple[str, int], float]:
    """Every logged (key, step) -> value of an MLflow run, read with MlflowClient."""
    keys = client.get_run(run_id).data.metrics
    return {(key, m.step): m.value for key in keys for m in client.get_metric_history(run_id, key)}


def _expected(run: Run) -> dict[tuple[str, int], float]:
    """The store's stats and metrics under the keys the sink promises, computed here independently."""
    out = {}
    for step, layer, tensor, kind, stat, value in run.frame().itertuples(index=False):
        out[(f"{kind}/{stat}/{layer}.{tensor}" if layer else f"{kind}/{stat}/{tensor}", int(step))] = float(value)
    for step, _, split, metric, value in run.metrics().itertuples(index=False):
        out[(f"metrics/{split}/{metric}", int(step))] = float(value)
    return out


def _assert_same(client: Any, mlflow_run: str, run: Run) -> None:
    """Every stat and metric of the store is in MLflow at its step with the same value; nothing else but the summary."""
    got = _history(client, mlflow_run)
    summary = {k: v for k, v in got.items() if k[0].startswith("summary/")}
    expected = _expected(run)
    assert len(expected) > 200
    # the store keeps stats as float32; MLflow gets the probe's float64, which rounds to the stored value
    assert {k: float(np.float32(v)) if k[0].split("/")[0] in R.KINDS else v
            for k, v in got.items() if k not in summary} == expected
    steps = run.summary["steps"]
    assert summary[("summary/final_loss", steps)] == run.summary["final_loss"]
    assert summary[("summary/vanishing_factor", steps)] == pytest.approx(run.summary["vanishing_factor"], rel=1e-12)


def test_stats_read_back_with_mlflow_equal_the_store(uri: str, tmp_path: Path) -> None:
    cfg = load_experiment("circles-deep", ["train.epochs=2", "record.every=5"], None).runs[1]
    sinks: list[MLflowSink] = []

    def sinks_for(cfg: Any, run_id: str | None) -> list[MLflowSink]:
        sinks.append(MLflowSink(uri, cfg.experiment, run_id, params=cfg.model_dump(mode="json")))
        return sinks

    result = run_one(cfg, tmp_path / "store", sinks_for=sinks_for)
    run = load_run(result.run_id, tmp_path / "store")
    client = MlflowClient(uri)
    _assert_same(client, sinks[0].run_id, run)
    info = client.get_run(sinks[0].run_id)
    assert info.info.status == "FINISHED" and info.info.run_name == result.run_id
    assert info.data.tags["gradprobe.status"] == R.FINISHED
    assert info.data.params["optimizer.lr"] == str(cfg.optimizer.lr)
    assert info.data.params["model.activation"] == "tanh"


def test_batches_hold_at_most_1000_metrics(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MLflowSink(uri, "batches")
    sizes: list[int] = []
    original = sink.client.log_batch
    monkeypatch.setattr(sink.client, "log_batch", lambda run_id, metrics=(), **kw: (
        sizes.append(len(metrics)), original(run_id, metrics=metrics, **kw))[1])
    frame = pd.DataFrame({"step": [s for s in range(5) for _ in range(500)], "layer": "fc",
                          "tensor": [f"w{i}" for _ in range(5) for i in range(500)], "kind": R.GRAD,
                          "stat": R.NORM, "value": [float(i) for i in range(2500)]})
    sink.add_stats(frame)
    sink.finish(R.FINISHED)
    assert sizes == [1000, 1000, 500]
    history = MlflowClient(uri).get_metric_history(sink.run_id, "grad/norm/fc.w7")
    assert sorted((m.step, m.value) for m in history) == [(s, 500.0 * s + 7) for s in range(5)]


@pytest.mark.parametrize(("status", "expected"), [(R.FINISHED, "FINISHED"), (R.DIVERGED, "FAILED"),
                                                  (R.FAILED, "FAILED"), (R.INTERRUPTED, "KILLED")])
def test_status_maps_to_mlflow(uri: str, status: str, expected: str) -> None:
    sink = MLflowSink(uri, "status")
    sink.finish(status, {"steps": 3, "final_loss": math.nan, "weight_layers": ["a"]}, error="boom" * 3000)
    run = MlflowClient(uri).get_run(sink.run_id)
    assert run.info.status == expected and run.data.tags["gradprobe.status"] == status
    assert run.data.tags["gradprobe.error"] == ("boom" * 3000)[:8000]
    assert run.data.metrics == {"summary/steps": 3.0}  # NaN and lists left out


def test_keys_are_sanitised_to_what_mlflow_accepts(uri: str) -> None:
    assert mlflow_key("grad/mean/blocks.0.attn[q]/weight") == "grad/mean/blocks.0.attn_q_/weight"
    assert mlflow_key("grad/mean//..") == "grad/mean/_/_"
    assert mlflow_key("a:b/" + "x" * 300) == ("a_b/" + "x" * 300)[:250]
    sink = MLflowSink(uri, "keys")
    frame = pd.DataFrame({"step": [1], "layer": ["enc.attn[q]:0"], "tensor": ["w"], "kind": [R.GRAD],
                          "stat": [R.MEAN], "value": [0.5]})
    sink.add_stats(frame)
    sink.finish(R.FINISHED)
    assert MlflowClient(uri).get_run(sink.run_id).data.metrics == {"grad/mean/enc.attn_q__0.w": 0.5}


def test_tracking_uri_turns_paths_into_file_uris(tmp_path: Path) -> None:
    assert tracking_uri(str(tmp_path / "ml")) == (tmp_path / "ml").as_uri()
    assert tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert tracking_uri(None) is None


def test_cli_logs_every_run_and_its_report(uri: str, tmp_path: Path) -> None:
    folder = tmp_path / "mlruns"  # a plain directory: the CLI turns it into a file: URI
    res = CliRunner().invoke(app, ["run", "circles-deep", "--set", "train.epochs=1", "--set", "record.every=4",
                                   "--store", str(tmp_path / "store"), "--mlflow", str(folder)])
    assert res.exit_code == 0, res.output
    assert "engine: loop, because --mlflow log live only from the loop engine" in res.output
    client = MlflowClient(folder.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("circles-deep").experiment_id])
    assert sorted(r.data.tags["gradprobe.arm"] for r in runs) == ["relu", "sigmoid", "tanh"]
    for mlflow_run in runs:
        assert mlflow_run.info.status == "FINISHED"
        report = [f.path for f in client.list_artifacts(mlflow_run.info.run_id, "report")]
        assert "report/report.html" in report and any(p.endswith(".png") for p in report)
        _assert_same(client, mlflow_run.info.run_id, load_run(mlflow_run.info.run_name, tmp_path / "store"))


def test_missing_mlflow_is_one_line_with_the_install_command(uri: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(GradprobeError, match=r"^MLflow is not installed; install it with: "
                                             r"pip install 'gradprobe\[mlflow\]'$"):
        MLflowSink(uri)
    res = CliRunner().invoke(app, ["run", "circles-deep", "--set", "train.epochs=1", "--store",
                                   str(tmp_path / "store"), "--mlflow", str(tmp_path / "ml")])
    assert res.exit_code != 0 and "pip install 'gradprobe[mlflow]'" in str(res.exception)  # main() prints it
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("circles-deep*"))

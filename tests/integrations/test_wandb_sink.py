"""WandbSink: the offline run file, read with W&B's own record protobuf, equals the run store."""

from __future__ import annotations

import json
import os
import struct
import subprocess
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
from gradprobe.sinks.wandb import STEP_KEY, WandbSink
from gradprobe.store.reader import Run, load_run
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_one

wandb = pytest.importorskip("wandb")
wandb_internal_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2")
EXAMPLE = Path(__file__).parents[2] / "examples" / "tracker_sinks.py"
_BLOCK, _HEADER = 32768, 7  # the LevelDB log framing of a .wandb file: 32 KiB blocks, 7-byte record headers


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B writing under tmp_path: no network, no login."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def read_records(path: Path) -> list[Any]:
    """Every record of a .wandb file as ``wandb_internal_pb2.Record`` (wandb 0.31 ships no Python reader)."""
    buf = path.read_bytes()
    assert buf[:4] == b":W&B"
    records, parts, pos = [], [], _HEADER  # the file header (":W&B", magic, version) is 7 bytes too
    while pos + _HEADER <= len(buf):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", buf[pos:pos + _HEADER])
        parts.append(buf[pos + _HEADER:pos + _HEADER + length])
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def read_run(wandb_dir: Path, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """(history rows, final summary, exit code) of the finished offline run ``run_id``."""
    wandb.teardown()  # run.finish() can return before wandb-core has written the file out
    (path,) = (wandb_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    rows, summary, code = [], {}, None
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                keys = list(item.nested_key) or [item.key]
                node = row
                for key in keys[:-1]:
                    node = node.setdefault(key, {})
                node[keys[-1]] = json.loads(item.value_json)
            rows.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                summary[".".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "exit":
            code = record.exit.exit_code
    return rows, summary, code


def _assert_same(rows: list[dict[str, Any]], run: Run) -> None:
    """Every stat, metric and histogram of the store is in W&B at its step with the same value, and nothing else."""
    scalars, hists = {}, {}
    for row in rows:
        step = row[STEP_KEY]
        for key, value in row.items():
            if isinstance(value, dict):
                hists[(key, step)] = (value["values"], value["bins"])
            elif not key.startswith("_") and key != STEP_KEY:
                assert (key, step) not in scalars
                scalars[(key, step)] = value
    expected = {}
    for step, layer, tensor, kind, stat, value in run.frame().itertuples(index=False):
        expected[(f"{kind}/{stat}/{layer}.{tensor}" if layer else f"{kind}/{stat}/{tensor}", step)] = float(value)
    for step, _, split, metric, value in run.metrics().itertuples(index=False):
        expected[(f"metrics/{split}/{metric}", step)] = float(value)
    assert len(expected) > 200
    # the store keeps stats as float32; W&B gets the probe's float64, which rounds to the stored value
    assert {k: float(np.float32(v)) if not k[0].startswith("metrics/") else v for k, v in scalars.items()} == expected
    stored = run.hists()
    assert len(stored) and len(hists) == len(stored)
    for step, layer, tensor, kind, edges, counts in stored.loc[
            :, ["step", "layer", "tensor", "kind", "edges", "counts"]].itertuples(index=False):
        values, bins = hists[(f"{kind}/hist/{layer}.{tensor}", step)]
        assert values == counts.tolist()
        np.testing.assert_array_equal(np.float32(bins), np.float32(edges))


def test_stats_read_back_from_the_offline_run_equal_the_store(wandb_dir: Path, tmp_path: Path) -> None:
    cfg = load_experiment("circles-deep", ["train.epochs=2", "record.every=5", "record.hist_every=10"], None).runs[1]
    sinks: list[WandbSink] = []

    def sinks_for(cfg: Any, run_id: str | None) -> list[WandbSink]:
        sinks.append(WandbSink("gradprobe-test", name=run_id, config=cfg.model_dump(mode="json")))
        return sinks

    result = run_one(cfg, tmp_path / "store", sinks_for=sinks_for)
    rows, summary, code = read_run(wandb_dir, sinks[0].run.id)
    _assert_same(rows, load_run(result.run_id, tmp_path / "store"))
    assert code == 0 and summary["gradprobe/status"] == R.FINISHED
    assert summary["summary/final_loss"] == result.summary["final_loss"]
    assert summary["summary/steps"] == result.summary["steps"]


def test_a_given_run_is_left_open_and_status_sets_the_exit_code(wandb_dir: Path) -> None:
    outer = wandb.init(project="gradprobe-test", reinit="create_new")
    sink = WandbSink(run=outer)
    frame = pd.DataFrame({"step": [3, 1], "layer": "", "tensor": "w", "kind": R.GRAD, "stat": R.NORM,
                          "value": [0.25, 0.5]})
    sink.add_stats(frame)  # steps out of order: both kept, against gradprobe/step
    sink.finish(R.DIVERGED, {"steps": 4}, error="NaN loss")
    outer.log({"user/loss": 1.0})  # still open: the user's run
    outer.finish(exit_code=0)
    rows, summary, _ = read_run(wandb_dir, outer.id)
    assert [(r[STEP_KEY], r["grad/norm/w"]) for r in rows if "grad/norm/w" in r] == [(1, 0.5), (3, 0.25)]
    assert summary["gradprobe/status"] == R.DIVERGED and summary["gradprobe/error"] == "NaN loss"
    own = WandbSink("gradprobe-test")
    own.finish(R.DIVERGED)
    assert read_run(wandb_dir, own.run.id)[2] == 1


def test_cli_logs_every_run(wandb_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "circles-deep", "--set", "train.epochs=1", "--set", "record.every=4",
                                   "--store", str(tmp_path / "store"), "--wandb", "gradprobe-cli", "--no-report"])
    assert res.exit_code == 0, res.output
    files = sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3
    for path in files:
        rows, summary, code = read_run(wandb_dir, path.stem.removeprefix("run-"))
        run_id = next(r.run.display_name for r in read_records(path) if r.WhichOneof("record_type") == "run")
        _assert_same(rows, load_run(run_id, tmp_path / "store"))
        assert code == 0 and summary["gradprobe/status"] == R.FINISHED


def test_missing_wandb_is_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(GradprobeError, match=r"^wandb is not installed; install it with: "
                                             r"pip install 'gradprobe\[wandb\]'$"):
        WandbSink("p")


def test_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1", "GRADPROBE_STORE": str(tmp_path / "store")}
    res = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "out")], capture_output=True, text=True,
                         env=env, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "MLflow run" in res.stdout and "W&B offline run" in res.stdout

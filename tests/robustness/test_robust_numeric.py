"""NaN/Inf during training is data, not a crash: status diverged, where it started, stats kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import robust_proc

from gradprobe import records as R
from gradprobe.store import list_runs, load_run

BLOWUP = """name: blowup
data: {name: circles, n_samples: 256, seed: 0}
model: {hidden: [8, 8], activation: linear}
optimizer: {name: sgd, lr: 0.01}
train: {batch_size: 32, epochs: 5}
record: {every: 1}
"""
TOTAL_STEPS = 5 * 256 // 32


def _run(tmp_path: Path, *flags: str) -> tuple[robust_proc.Child, Path]:
    source = tmp_path / "blowup.yaml"
    source.write_text(BLOWUP)
    store = tmp_path / "store"
    args = ["run", str(source), "--set", "optimizer.lr=1e6", *flags, "--no-report", "--store", str(store)]
    child = robust_proc.run(args, tmp_path / "logs")
    return child, store


def _stats_from_parquet(run_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step, stat and value columns read with pyarrow directly (not our reader)."""
    tables = [pq.read_table(p) for p in sorted(run_path.glob("stats-*.parquet"))]
    step = np.concatenate([t.column("step").to_numpy() for t in tables])
    stat = np.concatenate([np.asarray(t.column("stat").to_pylist()) for t in tables])
    value = np.concatenate([t.column("value").to_numpy() for t in tables])
    return step, stat, value


def _bad_steps(step: np.ndarray, stat: np.ndarray, value: np.ndarray) -> np.ndarray:
    own = stat != R.UPDATE_RATIO  # a zero bias has an infinite update ratio by definition
    bad = ((stat == R.NONFINITE) & (value > 0)) | (own & ~np.isfinite(value))
    return np.unique(step[bad])


def test_diverged_run_stops_and_keeps_its_stats(tmp_path: Path) -> None:
    child, store = _run(tmp_path)
    assert child.wait() == 0, child.stderr
    assert "Traceback" not in child.stderr
    run = load_run(list_runs(store)["run_id"][0], store)
    assert run.status == R.DIVERGED
    first = run.summary["first_nonfinite"]
    assert set(first) == {"step", "layer", "tensor", "kind"} and first["layer"]
    loss_step = run.summary["first_nonfinite_loss_step"]
    assert run.summary["steps"] == loss_step + 1 < TOTAL_STEPS  # stopped right after the bad step
    assert run.summary["nonfinite_steps"] == 1
    step, stat, value = _stats_from_parquet(run.path)
    bad = _bad_steps(step, stat, value)
    assert bad.size and bad[0] == first["step"] <= loss_step  # the probe saw it no later than the loss
    assert set(range(loss_step + 1)) <= set(step.tolist())  # every step up to the blow-up is kept
    frame = run.frame()
    assert len(frame) == len(step)
    assert frame[(frame.step < first["step"]) & (frame.stat != R.UPDATE_RATIO)]["value"].map(math.isfinite).all()
    assert (run.path / "model.pt").is_file() and not (run.path / "checkpoint.pt").exists()
    verdict = robust_proc.run(["diagnose", run.run_id, "--json", "--store", str(store)], tmp_path / "logs")
    assert verdict.wait() == 0, verdict.stderr
    assert json.loads(verdict.stdout)["verdict"] in ("unstable", "exploding")


@pytest.mark.parametrize("flag", ["--no-stop-on-nonfinite", "--set=train.stop_on_nonfinite=false"])
def test_without_stopping_the_run_goes_to_the_end_and_counts(tmp_path: Path, flag: str) -> None:
    child, store = _run(tmp_path, flag)
    assert child.wait() == 0, child.stderr
    run = load_run(list_runs(store)["run_id"][0], store)
    assert run.config["train"]["stop_on_nonfinite"] is False
    assert run.status == R.DIVERGED
    assert run.summary["steps"] == TOTAL_STEPS
    step, stat, value = _stats_from_parquet(run.path)
    assert step.max() == TOTAL_STEPS  # the final weights are recorded at the last step
    bad = _bad_steps(step, stat, value)
    assert run.summary["first_nonfinite"]["step"] == bad[0]
    losses = run.metrics()
    assert run.summary["nonfinite_steps"] >= 1
    assert not np.isfinite(losses[(losses.metric == R.LOSS)]["value"].to_numpy()[-1])


def test_stop_flag_on_is_the_default(tmp_path: Path) -> None:
    child, store = _run(tmp_path, "--stop-on-nonfinite")
    assert child.wait() == 0, child.stderr
    run = load_run(list_runs(store)["run_id"][0], store)
    assert run.config["train"]["stop_on_nonfinite"] is True
    assert run.summary["steps"] < TOTAL_STEPS

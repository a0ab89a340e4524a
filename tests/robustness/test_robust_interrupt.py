"""SIGINT/SIGTERM end a run as interrupted with 130/143; a killed run resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import robust_proc
import torch

from gradprobe import records as R
from gradprobe.store import list_runs, load_run, query

LONG = """name: long
data: {name: circles, n_samples: 1000, seed: 0}
model: {hidden: [6, 6, 6], activation: tanh, init: "normal:1"}
optimizer: {name: adam, lr: 0.01}
train: {batch_size: 32, epochs: 20, checkpoint_every: 40}
record: {every: 1, hist_every: 16}
"""
KEYS = ["step", "layer", "tensor", "kind", "stat"]


def _source(tmp_path: Path, epochs: int = 20) -> str:
    path = tmp_path / "long.yaml"
    path.write_text(LONG.replace("epochs: 20", f"epochs: {epochs}"))
    return str(path)


def _wait_for(store: Path, pattern: str, timeout: float = 120, count: int = 1) -> None:
    """Wait until ``count`` files matching ``runs/*/pattern`` exist in ``store``."""
    end = time.monotonic() + timeout
    while len(list(store.glob(f"runs/*/{pattern}"))) < count:
        assert time.monotonic() < end, f"no {pattern} after {timeout} s"
        time.sleep(0.05)


def _check_interrupted(store: Path) -> None:
    runs = list_runs(store)
    assert list(runs["status"]) == [R.INTERRUPTED]
    run = load_run(runs["run_id"][0], store)
    frame = run.frame()
    assert len(frame) > 0 and frame.step.min() == 0
    steps = sorted(frame.step.unique())
    assert steps == list(range(len(steps)))  # a gap-free prefix of the run: nothing half-written
    assert int(query("select count(*) as n from stats", store)["n"][0]) == len(frame)
    assert len(run.metrics()) > 0


def test_sigint_ends_the_run_as_interrupted_with_130(tmp_path: Path) -> None:
    store = tmp_path / "store"
    child = robust_proc.start(["run", _source(tmp_path), "--store", str(store)], tmp_path / "logs")
    _wait_for(store, "stats-*.parquet")
    os.kill(child.pid, signal.SIGINT)
    assert child.wait() == 130, child.stderr
    assert child.stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in child.stderr
    _check_interrupted(store)


def test_sigterm_to_the_console_script_ends_with_143(tmp_path: Path) -> None:
    store = tmp_path / "store"
    exe = Path(sys.executable).with_name("gradprobe")
    proc = subprocess.Popen([str(exe), "run", _source(tmp_path), "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(store, "stats-*.parquet")
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    _check_interrupted(store)


def _weights(store: Path) -> dict[str, torch.Tensor]:
    (path,) = store.glob("runs/*/model.pt")
    return torch.load(path, weights_only=True)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS, ignore_index=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_records(tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["run", _source(tmp_path), "--no-report"]
    child = robust_proc.start([*args, "--store", str(killed)], tmp_path / "logs")
    _wait_for(killed, "checkpoint.pt")
    _wait_for(killed, "stats-*.parquet", count=4)  # records after the checkpoint, to be dropped
    child.process.kill()
    assert child.wait() == -signal.SIGKILL
    run_id = list_runs(killed)["run_id"][0]
    assert load_run(run_id, killed).status == R.RUNNING  # a kill -9 leaves no chance to say more
    resumed = robust_proc.run(["run", "--resume", run_id[:20], "--store", str(killed)], tmp_path / "logs")
    assert resumed.wait() == 0, resumed.stderr
    reference = robust_proc.run([*args, "--store", str(whole)], tmp_path / "logs")
    assert reference.wait() == 0, reference.stderr

    a, b = _weights(killed), _weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run, ref = load_run(run_id, killed), load_run(list_runs(whole)["run_id"][0], whole)
    assert run.status == ref.status == R.FINISHED
    assert run.meta["resumed_at_step"] > 0
    assert not run.frame().duplicated(KEYS).any()  # each step once
    pd.testing.assert_frame_equal(_sorted(run.frame()), _sorted(ref.frame()))
    metric_keys = ["step", "split", "metric"]
    pd.testing.assert_frame_equal(run.metrics().sort_values(metric_keys, ignore_index=True),
                                  ref.metrics().sort_values(metric_keys, ignore_index=True))
    assert run.summary["vanishing_factor"] == ref.summary["vanishing_factor"]
    pd.testing.assert_frame_equal(run.units(), ref.units())  # continued from the checkpoint's per-unit snapshot
    assert not (run.path / "checkpoint.pt").exists()


def test_resume_refuses_finished_live_and_broken_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # Long enough (it is killed below) that the run is still being written when --resume starts.
    child = robust_proc.start(["run", _source(tmp_path, epochs=100), "--store", str(store)], tmp_path / "logs")
    _wait_for(store, "checkpoint.pt")
    run_id = list_runs(store)["run_id"][0]
    live = robust_proc.run(["run", "--resume", run_id, "--store", str(store)], tmp_path / "logs")
    assert live.wait() == 2 and "still being written" in live.stderr
    child.process.kill()
    child.wait()
    ckpt = store / "runs" / run_id / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a torn file, as if written without atomic rename
    broken = robust_proc.run(["run", "--resume", run_id, "--store", str(store)], tmp_path / "logs")
    assert broken.wait() == 2
    assert broken.stderr.strip().startswith("error: checkpoint:") and "delete it" in broken.stderr
    ckpt.unlink()  # without a checkpoint the run starts again from step 0
    again = robust_proc.run(["run", "--resume", run_id, "--store", str(store)], tmp_path / "logs")
    assert again.wait() == 0, again.stderr
    assert load_run(run_id, store).status == R.FINISHED
    done = robust_proc.run(["run", "--resume", run_id, "--store", str(store)], tmp_path / "logs")
    assert done.wait() == 2 and "has status finished" in done.stderr

"""kill -9 at random moments never leaves the store unreadable or a finished run changed."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import robust_proc
import torch

from gradprobe import records as R
from gradprobe.store import list_runs, load_run, query

KILLS = 20
SEED = 20261123
RUN = """name: kill
data: {name: circles, n_samples: 600, seed: 0}
model: {hidden: [6, 6, 6], activation: tanh}
optimizer: {name: adam, lr: 0.01}
train: {batch_size: 32, epochs: 8, checkpoint_every: 25}
record: {every: 1, hist_every: 5}
"""


def _visible_files_are_whole(store: Path) -> None:
    """Every non-temporary file in the store reads with a reader other than ours."""
    for path in (store / "runs").rglob("*"):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)


def _snapshot(run_id: str, store: Path) -> dict[str, Any]:
    run = load_run(run_id, store)
    return {"frame": run.frame(), "metrics": run.metrics(), "hists": len(run.hists()), "summary": run.summary}


def _check_store(store: Path, finished: dict[str, dict[str, Any]]) -> None:
    """The whole store loads, SQL agrees with the reader, and finished runs are exactly as before."""
    if not (store / "runs").exists():
        return
    _visible_files_are_whole(store)
    runs = list_runs(store)
    total = 0
    for run_id in runs["run_id"]:
        run = load_run(run_id, store)
        total += len(run.frame())
        run.metrics()
        run.hists()
    assert int(query("select count(*) as n from stats", store)["n"][0]) == total
    for run_id, before in finished.items():
        now = _snapshot(run_id, store)
        pd.testing.assert_frame_equal(now["frame"], before["frame"])
        pd.testing.assert_frame_equal(now["metrics"], before["metrics"])
        assert now["hists"] == before["hists"] and now["summary"] == before["summary"]


def _resumable(store: Path) -> list[str]:
    if not (store / "runs").exists():
        return []
    runs = list_runs(store)
    return list(runs[runs["status"] == R.RUNNING]["run_id"])


@pytest.mark.slow
def test_random_kills_leave_the_store_whole(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    store = tmp_path / "store"
    source = tmp_path / "kill.yaml"
    source.write_text(RUN)
    finished: dict[str, dict[str, Any]] = {}
    tally = {"kills": 0, "kills_after_the_run_started": 0, "kills_while_resuming": 0, "finished_before_kill": 0}
    start = time.monotonic()
    while tally["kills"] < KILLS:
        assert time.monotonic() - start < 240, tally
        killed_runs = _resumable(store)
        resuming = bool(killed_runs) and rng.random() < 0.3  # also kill runs that are being resumed
        args = ["--resume", killed_runs[0]] if resuming else [str(source)]
        known = set(list_runs(store)["run_id"]) if store.exists() else set()
        child = robust_proc.start(["run", *args, "--store", str(store)], tmp_path / "logs")
        time.sleep(rng.uniform(0.3, 3.0))
        child.process.kill()
        code = child.wait()
        if code == 0:
            tally["finished_before_kill"] += 1
        else:
            assert code == -signal.SIGKILL, child.stderr
            tally["kills"] += 1
            tally["kills_while_resuming"] += resuming
            started = resuming or (store.exists() and bool(set(list_runs(store)["run_id"]) - known))
            tally["kills_after_the_run_started"] += started
        _check_store(store, finished)
        for run_id in list_runs(store)["run_id"] if store.exists() else []:
            if run_id not in finished and load_run(run_id, store).status == R.FINISHED:
                finished[run_id] = _snapshot(run_id, store)
    print("kill tally", tally, "finished runs", len(finished))
    assert tally["kills"] >= KILLS

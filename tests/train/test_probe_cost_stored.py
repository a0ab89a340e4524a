"""A loop-engine run stores the probe's cost in its summary, and ``gradprobe show`` prints it (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq

from gradprobe import records as R
from gradprobe.store.reader import load_run
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_one


def test_probe_cost_is_in_run_json_and_shown(tmp_path):
    cfg = load_experiment("circles-deep", ["train.epochs=2"]).runs[2]  # 32 steps per epoch, records every epoch
    result = run_one(cfg, tmp_path)
    run_dir = tmp_path / "runs" / result.run_id
    doc = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))  # read without our reader
    cost = doc["summary"]["probe_cost"]
    assert cost == result.summary["probe_cost"] == load_run(result.run_id, tmp_path).summary["probe_cost"]
    assert set(cost) == {"budget", "overhead", "recorded_steps", "steps"}
    assert cost["budget"] is None and cost["steps"] == 64 and 0 < cost["overhead"] < 1
    # The recorded steps are those whose gradient statistics are in the parquet parts.
    parts = sorted(run_dir.glob("stats-*.parquet"))
    tables = [pq.read_table(p, columns=["step", "kind"]).to_pydict() for p in parts]
    steps = {s for t in tables for s, k in zip(t["step"], t["kind"], strict=True) if k == R.GRAD}
    assert cost["recorded_steps"] == len(steps) == 2
    env = {**os.environ, "GRADPROBE_STORE": str(tmp_path), "COLUMNS": "200"}
    show = subprocess.run([sys.executable, "-m", "gradprobe.cli", "show", result.run_id], capture_output=True,
                          text=True, env=env, timeout=120)
    assert show.returncode == 0, show.stderr
    line = next(line for line in show.stdout.splitlines() if "probe_cost" in line)
    assert f"{100 * cost['overhead']:.1f}% of wall time, 2 of 64 steps recorded" in line

"""``gradprobe ls`` and ``show`` print what the store holds, read without pandas (issue 11).

The expected tables are computed here from the records we wrote, with pandas, independently of
the command's NumPy/pyarrow path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gradprobe import records as R
from gradprobe.store import RunWriter


def _gradprobe(*args: str, store: Path) -> str:
    env = {**os.environ, "GRADPROBE_STORE": str(store), "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-m", "gradprobe.cli", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in ``text`` as lists of stripped cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def _writer(root: Path, run_id: str, seed: object, created: float) -> RunWriter:
    return RunWriter(root, run_id, config={}, env={}, meta={"experiment": "exp", "arm": "a", "seed": seed},
                     clock=lambda: created)


def test_show_prints_first_median_last_mean_abs_grad_per_parameter(tmp_path):
    rng = np.random.default_rng(0)
    # Two rows per parameter and step (e.g. two probes' records), steps written out of order.
    frame = pd.DataFrame([(step, f"blocks.{i}", tensor, R.GRAD, stat, 0.0)
                          for step in (3, 0, 7, 5) for i in (1, 0) for tensor in ("weight", "bias")
                          for stat in (R.MEAN_ABS, R.MEAN_ABS, "norm")], columns=list(R.STAT_COLUMNS))
    frame["value"] = 10.0 ** rng.uniform(-6, 1, len(frame))
    with _writer(tmp_path, "exp.a.s0.x", 0, 1e9) as writer:
        writer.add_stats(frame)
    stored = frame.assign(value=frame.value.astype(np.float32).astype(np.float64))  # the store keeps float32
    grads = stored[stored.stat == R.MEAN_ABS].sort_values("step", kind="stable")
    expected = []
    for name, grp in grads.groupby(grads.layer + "." + grads.tensor, sort=False):
        expected.append([name, f"{grp[grp.step == 0].value.mean():.3g}", f"{grp.value.median():.3g}",
                         f"{grp[grp.step == 7].value.mean():.3g}"])
    out = _gradprobe("show", "exp.a", store=tmp_path)
    header = next(line for line in out.splitlines() if line.startswith("┃ parameter"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["parameter", "step 0", "median", "step 7"]
    assert [row for row in _table_rows(out) if row[0].startswith("blocks.")] == expected


def test_ls_orders_by_creation_and_marks_what_a_run_lacks(tmp_path):
    with _writer(tmp_path, "b-late", 2, 2e9) as writer:
        writer.set_summary(final_loss=0.25, train_accuracy=0.875, vanishing_factor=12.5)
    _writer(tmp_path, "a-early", "x", 1e9).finish("failed")
    rows = _table_rows(_gradprobe("ls", store=tmp_path))
    assert rows == [["a-early", "exp", "a", "-", "failed", "-", "-", "-"],
                    ["b-late", "exp", "a", "2", "finished", "0.25", "87.5%", "12.5"]]

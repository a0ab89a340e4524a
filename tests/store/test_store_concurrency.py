"""Several processes write runs into one store at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd

from gradprobe.records import STAT_COLUMNS
from gradprobe.store import RunWriter, list_runs, load_run, new_run_id


def _frame(worker: int, step0: int) -> pd.DataFrame:
    rows = [
        (s, f"layers.{i}", "weight", "grad", "norm", float(worker * 1000 + s))
        for s in range(step0, step0 + 5)
        for i in range(4)
    ]
    return pd.DataFrame(rows, columns=list(STAT_COLUMNS))


def _write_run(args: tuple[str, int]) -> str:
    """Write one run with three flushes; runs in a spawned process."""
    root, worker = args
    run_id = new_run_id("conc", f"w{worker}", worker)
    with RunWriter(Path(root), run_id, config={"w": worker}, env={}, meta={"seed": worker}) as w:
        for part in range(3):
            w.add_stats(_frame(worker, 5 * part))
            w.flush()
    return run_id


def test_four_processes_one_store(root: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        ids = pool.map(_write_run, [(str(root), w) for w in range(4)])
    assert sorted(list_runs(root).run_id) == sorted(ids)
    for worker, run_id in enumerate(ids):
        run = load_run(run_id, root)
        assert run.status == "finished" and run.config == {"w": worker}
        frame = run.frame()
        assert len(frame) == 60 and set(frame.value) == {worker * 1000.0 + s for s in range(15)}
    assert not list(root.rglob(".tmp-*"))

"""Resumability and executors: a repeated sweep trains nothing; local and process agree exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradprobe.store.layout import run_ids
from gradprobe.sweep import SweepOptions, aggregate_sweep, collect, load_sweep, run_sweep
from gradprobe.train.config import RunConfig


def test_second_identical_sweep_trains_nothing(tiny: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    sweep = load_sweep(tiny)
    calls: list[tuple[float, int]] = []
    first = run_sweep(sweep, store, progress=lambda done, total: calls.append((done, total)))
    assert len(first.ran) == 8 and first.skipped == 0 and not first.errors
    assert len(run_ids(store)) == 8
    assert calls[0] == (0, 8) and calls[-1] == (8, 8)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # progress never goes back
    table = aggregate_sweep(sweep, store)

    again = run_sweep(load_sweep(tiny), store)
    assert again.ran == [] and again.skipped == 8
    assert len(run_ids(store)) == 8
    pd.testing.assert_frame_equal(aggregate_sweep(sweep, store), table, check_exact=True)


def test_more_seeds_trains_only_the_new_ones(tiny: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_sweep(load_sweep(tiny, seeds=1), store)
    before = set(run_ids(store))
    bigger = load_sweep(tiny, seeds=3)
    outcome = run_sweep(bigger, store)
    assert outcome.skipped == 4 and len(outcome.ran) == 8
    runs = collect(bigger, store)
    assert len(runs) == 12 and set(runs[runs.seed == 0].run_id) == before


class _FailOnce:
    """Raise for one configuration (depth 3, tanh, seed 1)."""

    def __call__(self, cfg: RunConfig) -> None:
        if (cfg.model.depth, cfg.model.activation, cfg.seed) == (3, "tanh", 1):
            raise RuntimeError("boom")


def test_failure_is_reported_and_rerun_fills_it_in(tiny: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    sweep = load_sweep(tiny)
    outcome = run_sweep(sweep, store, SweepOptions(hook=_FailOnce()))
    assert len(outcome.ran) == 7 and outcome.errors == ["RuntimeError: boom"]
    rerun = run_sweep(sweep, store)
    assert len(rerun.ran) == 1 and rerun.skipped == 7
    runs = collect(sweep, store)
    assert len(runs) == 8 and runs.run_id.is_unique


def test_local_and_process_executors_agree(tiny: str, tmp_path: Path) -> None:
    sweep = load_sweep(tiny)
    run_sweep(sweep, tmp_path / "local")
    outcome = run_sweep(sweep, tmp_path / "process", SweepOptions(executor="process", workers=2))
    assert len(outcome.ran) == 8 and not outcome.errors
    local, process = aggregate_sweep(sweep, tmp_path / "local"), aggregate_sweep(sweep, tmp_path / "process")
    assert (local["n_runs"] == 2).all()
    pd.testing.assert_frame_equal(local, process, check_exact=True)

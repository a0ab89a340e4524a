"""load_run by id and prefix, list_runs, and the GRADPROBE_STORE variable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from gradprobe.errors import GradprobeError
from gradprobe.store import RunWriter, list_runs, load_run

NewWriter = Callable[..., RunWriter]
Factory = Callable[..., pd.DataFrame]


def _clock(t: float) -> Callable[[], float]:
    return lambda: t


def test_load_by_prefix(root: Path, new_writer: NewWriter) -> None:
    new_writer("alpha.relu.s0.x1").finish("finished")
    new_writer("alpha.relu.s1.x2").finish("finished")
    new_writer("beta.tanh.s0.x3").finish("failed", error="E: x")
    assert load_run("beta", root).run_id == "beta.tanh.s0.x3"
    assert load_run("alpha.relu.s1", root).run_id == "alpha.relu.s1.x2"
    with pytest.raises(GradprobeError) as info:
        load_run("alpha", root)
    assert str(info.value) == (
        f"run: 'alpha' is ambiguous in store {root}: "
        "it matches alpha.relu.s0.x1, alpha.relu.s1.x2; "
        "give more characters"
    )


def test_exact_id_beats_prefix(root: Path, new_writer: NewWriter) -> None:
    new_writer("a").finish("finished")
    new_writer("ab").finish("finished")
    assert load_run("a", root).run_id == "a"


def test_not_found_message(root: Path, new_writer: NewWriter) -> None:
    new_writer("a")
    with pytest.raises(GradprobeError) as info:
        load_run("zzz", root)
    assert str(info.value) == f"run: 'zzz' not found in store {root}; see 'gradprobe ls'"
    with pytest.raises(GradprobeError, match="not a valid run id"):
        load_run("../a", root)


def test_list_runs(root: Path, new_writer: NewWriter, caplog: pytest.LogCaptureFixture) -> None:
    meta = {"experiment": "e", "arm": "relu", "seed": 1}
    w2 = new_writer("late", clock=_clock(2_000_000_000.0), meta=meta)
    w2.finish("finished", summary={"final_loss": 0.5, "grad": {"first": 1e-9}})
    new_writer("early", clock=_clock(1_000_000_000.0)).finish("failed")
    new_writer("broken").finish("finished")
    (root / "runs" / "broken" / "run.json").write_text("{truncated")
    (root / "runs" / ".trash").mkdir()
    with caplog.at_level(logging.WARNING, logger="gradprobe.store"):
        runs = list_runs(root)
    assert "skipping run broken" in caplog.text
    assert list(runs.run_id) == ["early", "late"]
    assert list(runs.columns) == [
        "run_id",
        "experiment",
        "arm",
        "seed",
        "status",
        "created",
        "summary.final_loss",
        "summary.grad.first",
    ]
    assert runs.loc[1, "summary.final_loss"] == 0.5 and runs.loc[1, "seed"] == 1
    assert list(runs.status) == ["failed", "finished"]
    assert str(runs.seed.dtype) == "Int64"


def test_list_runs_empty_store(tmp_path: Path) -> None:
    runs = list_runs(tmp_path / "nothing")
    assert runs.empty and list(runs.columns)[:6] == [
        "run_id",
        "experiment",
        "arm",
        "seed",
        "status",
        "created",
    ]


def test_env_store_is_honoured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_stats: Factory
) -> None:
    monkeypatch.setenv("GRADPROBE_STORE", str(tmp_path / "envstore"))
    with RunWriter(None, "viaenv", config={}, env={}, meta={}) as w:
        w.add_stats(make_stats())
    assert (tmp_path / "envstore" / "runs" / "viaenv" / "run.json").is_file()
    assert load_run("viaenv").status == "finished"
    assert list(list_runs().run_id) == ["viaenv"]

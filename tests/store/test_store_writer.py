"""RunWriter -> files -> reader round trips, checked also with pyarrow as an independent reader."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradprobe.errors import GradprobeError
from gradprobe.records import GRAD, MEAN, METRIC_COLUMNS, STAT_COLUMNS
from gradprobe.store import RunWriter, load_run

NewWriter = Callable[..., RunWriter]
Factory = Callable[..., pd.DataFrame]


def _as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """What the store returns for ``frame``: float32-rounded values as float64, by step."""
    out = frame.astype({"step": np.int64}).copy()
    out["value"] = out["value"].astype(np.float32).astype(np.float64)
    return out.sort_values("step", kind="stable", ignore_index=True)


def test_round_trip(
    root: Path,
    new_writer: NewWriter,
    make_stats: Factory,
    make_metrics: Factory,
    make_hists: Factory,
) -> None:
    stats, metrics, hists = make_stats(), make_metrics(), make_hists()
    with new_writer() as w:
        w.add_stats(stats)
        w.add_metrics(metrics)
        w.add_hists(hists)
        w.set_summary(final_loss=0.25)
    run = load_run(w.run_id, root)
    assert run.status == "finished" and run.error is None
    assert run.summary == {"final_loss": 0.25}
    assert run.config == {"depth": 3, "lr": 0.1} and run.env == {"torch": "x"}
    assert run.meta["experiment"] == "exp" and run.meta["created"].endswith("+00:00")
    got = run.frame()
    assert list(got.columns) == list(STAT_COLUMNS)
    pd.testing.assert_frame_equal(got, _as_stored(stats))
    pd.testing.assert_frame_equal(
        run.metrics(), metrics.astype({"step": np.int64, "epoch": np.int64})
    )
    back = run.hists()
    assert back[["step", "layer", "tensor", "kind"]].equals(
        hists[["step", "layer", "tensor", "kind"]]
    )
    for got_e, got_c, e, c in zip(back["edges"], back["counts"], hists["edges"], hists["counts"]):
        assert got_e.dtype == np.float64 and got_c.dtype == np.int64
        np.testing.assert_allclose(got_e, e, rtol=1e-7)
        np.testing.assert_array_equal(got_c, c)


def test_filters(root: Path, new_writer: NewWriter, make_stats: Factory) -> None:
    stats = make_stats()
    with new_writer() as w:
        w.add_stats(stats)
    run = load_run(w.run_id, root)
    want = stats[
        (stats.kind == GRAD) & (stats.stat == MEAN) & stats.layer.isin(["layers.0", "layers.2"])
    ]
    got = run.frame(kind=GRAD, stat=MEAN, layer=["layers.0", "layers.2"])
    pd.testing.assert_frame_equal(got, _as_stored(want))
    with pytest.raises(GradprobeError, match="kind: 'grads' is not a record kind"):
        run.frame(kind="grads")


def test_parquet_read_by_pyarrow_equals_input(
    root: Path, new_writer: NewWriter, make_stats: Factory
) -> None:
    stats = make_stats(seed=3)
    with new_writer() as w:
        w.add_stats(stats)
    table = pq.read_table(w.path / "stats-000001.parquet")
    assert str(table.schema.field("step").type) == "int32"
    assert str(table.schema.field("value").type) == "float"
    raw = table.to_pandas()
    assert (raw["run_id"] == w.run_id).all()
    expected = stats.assign(run_id=w.run_id)
    expected["value"] = expected["value"].astype(np.float32)
    expected["step"] = expected["step"].astype(np.int32)
    pd.testing.assert_frame_equal(raw, expected)


def test_many_flushes_read_as_one(root: Path, new_writer: NewWriter, make_stats: Factory) -> None:
    parts = [make_stats(step0=4 * i, seed=i) for i in range(3)]
    w = new_writer(flush_rows=10_000)
    for frame in reversed(parts):  # written newest first: the reader must sort by step
        w.add_stats(frame)
        w.flush()
    w.flush()  # nothing buffered: no empty part
    w.finish("finished")
    assert sorted(p.name for p in w.path.glob("stats-*")) == [
        f"stats-00000{i}.parquet" for i in (1, 2, 3)
    ]
    got = load_run(w.run_id, root).frame()
    pd.testing.assert_frame_equal(got, _as_stored(pd.concat(parts, ignore_index=True)))


def test_auto_flush(root: Path, new_writer: NewWriter, make_stats: Factory) -> None:
    w = new_writer(flush_rows=100)
    frame = make_stats(n_steps=1)  # 3 layers x 2 kinds x 7 stats = 42 rows
    for _ in range(3):
        w.add_stats(frame)
    assert [p.name for p in w.path.glob("stats-*")] == ["stats-000001.parquet"]
    w.finish("finished")
    assert len(load_run(w.run_id, root).frame()) == 126


def test_temp_files_are_ignored(
    root: Path, new_writer: NewWriter, make_stats: Factory, make_metrics: Factory
) -> None:
    with new_writer() as w:
        w.add_stats(make_stats())
        w.add_metrics(make_metrics())
    (w.path / ".tmp-stats-000009.parquet").write_bytes(b"PAR1\x00\x01junk")
    (w.path / ".tmp-run.json-1234").write_text("{not json")
    (w.path / "notes.txt").write_text("hello")
    run = load_run(w.run_id, root)
    assert len(run.frame()) == len(make_stats()) and len(run.metrics()) == len(make_metrics())


def test_bytes_per_value(root: Path, new_writer: NewWriter, make_stats: Factory) -> None:
    stats = make_stats(
        n_layers=20, n_steps=500, seed=1
    )  # 20 layers x 7 stats x 2 kinds x 500 steps
    assert len(stats) == 140_000
    with new_writer() as w:
        w.add_stats(stats)
    size = (w.path / "stats-000001.parquet").stat().st_size
    per_value = size / len(stats)
    print(f"bytes per stat value: {per_value:.2f}")  # shown with pytest -s
    assert per_value <= 16


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.drop(columns="value"),
        lambda f: f.assign(extra=1),
        lambda f: f.rename(columns={"stat": "name"}),
        lambda f: f.iloc[:, :5].set_axis(["step", "epoch", "split", "metric", "value"], axis=1),
    ],
    ids=["missing", "extra", "renamed", "metrics"],
)
def test_add_stats_checks_columns(
    new_writer: NewWriter, make_stats: Factory, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> None:
    w = new_writer()
    with pytest.raises(ValueError, match="stats: columns must be"):
        w.add_stats(change(make_stats()))


def test_bad_values_raise_value_error(
    new_writer: NewWriter, make_stats: Factory, make_metrics: Factory
) -> None:
    w = new_writer()
    with pytest.raises(ValueError, match="stats:"):
        w.add_stats(make_stats().assign(step=2**40))
    with pytest.raises(ValueError, match="metrics:"):
        w.add_metrics(make_metrics().assign(split=1))


def test_finish_validates_status(new_writer: NewWriter) -> None:
    w = new_writer()
    with pytest.raises(
        GradprobeError, match="status: 'done' is not a run status; use one of running"
    ):
        w.finish("done")


def test_run_exists(new_writer: NewWriter) -> None:
    new_writer("dup")
    with pytest.raises(GradprobeError, match="run: 'dup' already exists"):
        new_writer("dup")


def test_interrupted_run_keeps_flushed_stats(
    root: Path, new_writer: NewWriter, make_stats: Factory
) -> None:
    stats = make_stats()
    with pytest.raises(KeyboardInterrupt), new_writer() as w:
        w.add_stats(stats)
        w.flush()
        raise KeyboardInterrupt
    run = load_run(w.run_id, root)
    assert run.status == "interrupted" and run.error == "KeyboardInterrupt: "
    pd.testing.assert_frame_equal(run.frame(), _as_stored(stats))


def test_failed_run_records_error(root: Path, new_writer: NewWriter, make_metrics: Factory) -> None:
    with pytest.raises(RuntimeError), new_writer() as w:
        w.add_metrics(make_metrics())  # buffered, not flushed: the failure path flushes it
        raise RuntimeError("boom")
    run = load_run(w.run_id, root)
    assert (run.status, run.error) == ("failed", "RuntimeError: boom")
    assert len(run.metrics()) == len(make_metrics())


def test_explicit_status_survives_context_exit(root: Path, new_writer: NewWriter) -> None:
    with new_writer() as w:
        w.finish("diverged", summary={"diverged_at": 12})
    assert load_run(w.run_id, root).status == "diverged"


def test_resume_continues_numbering(root: Path, new_writer: NewWriter, make_stats: Factory) -> None:
    first, second = make_stats(seed=1), make_stats(step0=4, seed=2)
    with pytest.raises(KeyboardInterrupt), new_writer() as w:
        w.add_stats(first)
        raise KeyboardInterrupt
    (w.path / ".tmp-stats-000002.parquet-dead").write_bytes(b"junk")
    w2 = RunWriter.resume(root, w.run_id)
    assert json.loads((w.path / "run.json").read_text())["status"] == "running"
    assert not (w.path / ".tmp-stats-000002.parquet-dead").exists()
    with w2:
        w2.add_stats(second)
    assert sorted(p.name for p in w.path.glob("stats-*")) == [
        "stats-000001.parquet",
        "stats-000002.parquet",
    ]
    run = load_run(w.run_id, root)
    assert run.status == "finished" and run.error is None
    pd.testing.assert_frame_equal(
        run.frame(), _as_stored(pd.concat([first, second], ignore_index=True))
    )


def test_resume_missing_run(root: Path) -> None:
    with pytest.raises(GradprobeError, match="run: 'nope' cannot be resumed"):
        RunWriter.resume(root, "nope")


def test_empty_run_has_typed_empty_frames(root: Path, new_writer: NewWriter) -> None:
    with new_writer() as w:
        pass
    run = load_run(w.run_id, root)
    frame = run.frame()
    assert list(frame.columns) == list(STAT_COLUMNS) and frame.empty
    assert frame["step"].dtype == np.int64 and frame["value"].dtype == np.float64
    assert list(run.metrics().columns) == list(METRIC_COLUMNS)
    assert run.hists().empty

"""TensorBoard events read back with TensorBoard's own reader (and tbparse), compared with the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tbparse import SummaryReader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradprobe import records as R
from gradprobe.report.tensorboard import export_runs, hist_tag, metric_tag, stat_tag
from gradprobe.store.reader import Run, load_run
from gradprobe.train.config import RunConfig
from gradprobe.train.runner import run_one


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def _assert_same_as_store(run: Run, folder: Path) -> int:
    """Compare every stat, metric and histogram of ``run`` with the events in ``folder``."""
    acc = _events(folder)
    frame = run.frame()
    groups = frame.groupby(["kind", "stat", "layer", "tensor"], sort=False)
    metrics = run.metrics().groupby(["split", "metric"], sort=False)
    assert sorted(acc.Tags()["scalars"]) == sorted(
        [stat_tag(*key) for key, _ in groups] + [metric_tag(*key) for key, _ in metrics])
    for key, group in groups:
        events = acc.Scalars(stat_tag(*key))
        assert [e.step for e in events] == group["step"].tolist()
        np.testing.assert_array_equal(np.float32([e.value for e in events]),
                                      group["value"].to_numpy(np.float32))
    for key, group in metrics:
        events = acc.Scalars(metric_tag(*key))
        assert [e.step for e in events] == group["step"].tolist()
        np.testing.assert_allclose([e.value for e in events], group["value"], rtol=1e-6)
    hists = run.hists()
    for (kind, layer, tensor), group in hists.groupby(["kind", "layer", "tensor"], sort=False):
        events = acc.Histograms(hist_tag(kind, layer, tensor))
        assert [e.step for e in events] == group["step"].tolist()
        for event, edges, counts in zip(events, group["edges"], group["counts"]):
            h = event.histogram_value
            assert list(h.bucket) == counts.tolist() and h.num == counts.sum()
            np.testing.assert_allclose(h.bucket_limit, edges[1:], rtol=1e-6)
            assert h.min == pytest.approx(edges[0]) and h.max == pytest.approx(edges[-1])
    return len(frame)


def test_export_writes_one_folder_per_arm_and_seed(make_run, tmp_path: Path) -> None:
    runs = [make_run("exp", "a", 0), make_run("exp", "b", 0), make_run("exp", "a", 1)]
    logdir = tmp_path / "tb"
    folders = export_runs(runs, logdir)
    assert folders == [logdir / "exp" / "a" / "seed0", logdir / "exp" / "b" / "seed0",
                       logdir / "exp" / "a" / "seed1"]
    for run, folder in zip(runs, folders):
        assert _assert_same_as_store(run, folder) > 0
    # TensorBoard overlays runs by folder: every run has the same tag, told apart by dir_name.
    scalars = SummaryReader(str(logdir), extra_columns={"dir_name"}).scalars
    tag = "grad/mean_abs/layers/0/weight"
    per_dir = scalars[scalars.tag == tag].groupby("dir_name")["value"].mean()
    assert sorted(per_dir.index) == ["exp/a/seed0", "exp/a/seed1", "exp/b/seed0"]
    # seed 1 of the fake data is 10x smaller, as the store says
    stored = runs[2].frame(kind="grad", stat="mean_abs", layer="layers.0")
    stored = stored[stored.tensor == "weight"]["value"].mean()
    assert per_dir["exp/a/seed1"] == pytest.approx(stored, rel=1e-6)


def test_names_cannot_escape_and_old_folders_are_not_mixed(make_run, tmp_path: Path) -> None:
    run = make_run("exp", "../../evil", 0)
    logdir = tmp_path / "tb"
    first, second = export_runs([run, run], logdir)
    assert first.parent == second.parent and logdir in first.parents
    assert (first.name, second.name) == ("seed0", "seed0-2")
    assert not (tmp_path / "evil").exists()


def test_live_sink_during_training_matches_the_store(tmp_path: Path, store: Path) -> None:
    from gradprobe.report.tensorboard import TensorBoardSink

    cfg = RunConfig.model_validate({
        "experiment": "live", "arm": "tanh", "seed": 3,
        "data": {"name": "circles", "n_samples": 64},
        "model": {"depth": 2, "width": 4, "activation": "tanh"},
        "train": {"epochs": 2, "batch_size": 16},
        "record": {"every": 2, "hist_every": 4},
    })
    logdir = tmp_path / "tb"
    sinks = []

    def sinks_for(config: RunConfig, run_id: str | None) -> list[TensorBoardSink]:
        sinks.append(TensorBoardSink(logdir, config.experiment, config.arm, config.seed))
        return sinks[-1:]

    torch.manual_seed(0)
    result = run_one(cfg, store, sinks_for=sinks_for)
    assert result.status == R.FINISHED and len(sinks) == 1
    run = load_run(result.run_id, store)
    assert sinks[0].path == logdir / "live" / "tanh" / "seed3"
    assert _assert_same_as_store(run, sinks[0].path) > 0
    assert len(run.hists()) > 0

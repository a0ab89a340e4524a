"""Every record cadence a config accepts (10, epoch, log_spaced:N, at:...) gives the same steps in both engines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gradprobe import records as R
from gradprobe.data.datasets import load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import load_run
from gradprobe.train.ensemble import train_group
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_one

N_SAMPLES, BATCH, EPOCHS = 200, 32, 30


def _expected(form: object, steps_per_epoch: int, total: int) -> list[int]:
    """The steps each form names, computed here from its definition, not from gradprobe.schedules."""
    if form == "epoch":
        return list(range(0, total, steps_per_epoch))
    if isinstance(form, int):
        return list(range(0, total, form))
    name, _, args = str(form).partition(":")
    if name == "log_spaced":  # N points evenly spaced in log(step + 1) over steps 0 .. total - 1
        return sorted({int(s) for s in np.round(np.geomspace(1, total, int(args))).astype(int) - 1})
    return sorted(int(a) for a in args.split(",") if int(a) < total)


def _steps(run_id: str, store) -> tuple[list[int], list[int]]:
    run = load_run(run_id, store)
    grads = run.frame(kind=R.GRAD, stat=R.MEAN_ABS)
    return sorted(set(grads["step"].tolist())), sorted(set(run.hists()["step"].tolist()))


@pytest.mark.parametrize("form", [10, "epoch", "log_spaced:20", "at:0,3,50,77,1000"])
def test_both_engines_record_the_steps_the_cadence_names(form, tmp_path):
    value = json.dumps(form)
    exp = load_experiment("circles-deep", [
        f"data.n_samples={N_SAMPLES}", f"train.batch_size={BATCH}", f"train.epochs={EPOCHS}",
        f"record.every={value}", f"record.hist_every={value}"], None)
    runs = exp.runs[:2]
    data = load_dataset(runs[0].data)
    steps_per_epoch = math.ceil(len(data.y_train) / BATCH)
    total = EPOCHS * steps_per_epoch
    want = _expected(form, steps_per_epoch, total)
    assert len(want) > 3  # the forms differ, so the test tells them apart
    ensemble = train_group(runs, data, tmp_path / "ens")
    alone = [run_one(cfg, tmp_path / "loop", data) for cfg in runs]
    for ens, ref in zip(ensemble, alone):
        assert _steps(ref.run_id, tmp_path / "loop") == (want, want)
        assert _steps(ens.run_id, tmp_path / "ens") == (want, want)


@pytest.mark.parametrize("bad", ["log_spaced", "log_spaced:0", "at:", "at:1,x", "weekly", 0])
def test_a_bad_cadence_is_one_line_naming_field_value_and_forms(bad):
    with pytest.raises(GradprobeError) as info:
        load_experiment("circles-deep", [f"record.hist_every={json.dumps(bad)}"], None)
    message = str(info.value)
    assert "\n" not in message
    assert "record.hist_every" in message and repr(bad) in message and "log_spaced:N" in message

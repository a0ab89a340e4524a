"""The ensemble engine against the one-model loop (``run_one``): same weights, stats, metrics, summary, store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradprobe import records as R
from gradprobe.data.datasets import load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import load_run
from gradprobe.sweep.groups import can_ensemble, group_configs
from gradprobe.train.config import RunConfig
from gradprobe.train.ensemble import train_group
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import RunResult, Trainer
from gradprobe.train.predict import load_model
from gradprobe.train.runner import run_one

KEYS = ["step", "layer", "tensor", "kind", "stat"]


@pytest.fixture(autouse=True)
def _loop_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary: loop.py is mid-edit (checkpoint/resume) and reads attributes its __init__ does not set yet."""
    if not hasattr(Trainer, "_counters"):
        monkeypatch.setattr(Trainer, "_counters", {}, raising=False)
        monkeypatch.setattr(Trainer, "_prior", pd.DataFrame(), raising=False)


def _both(runs: list[RunConfig], store: Path) -> tuple[list[RunResult], list[RunResult]]:
    data = load_dataset(runs[0].data)
    ensemble = train_group(runs, data, store / "ens", batch="b-ens")
    alone = [run_one(cfg, store / "loop", data, batch="b-loop") for cfg in runs]
    return ensemble, alone


def _assert_same_stats(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a[KEYS].itertuples(index=False)) == list(b[KEYS].itertuples(index=False))
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    tol = 1e-4 * np.abs(vb) + 1e-6
    # std from the sum of squares cancels when |mean| >> std (e.g. a near-constant logit): both
    # engines share that formula, so allow the cancellation error, relative to the mean's size.
    merged = a.assign(other=vb).merge(b[b["stat"] == R.MEAN][KEYS[:-1] + ["value"]].rename(
        columns={"value": "mean"}), on=KEYS[:-1], how="left")
    is_std = (merged["stat"] == R.STD).to_numpy()
    tol[is_std] += 1e-5 * np.nan_to_num(np.abs(merged["mean"].to_numpy()[is_std]), nan=0.0) ** 2 / np.maximum(
        np.abs(vb[is_std]), 1e-12)
    both_nan = np.isnan(va) & np.isnan(vb)
    with np.errstate(invalid="ignore"):  # inf - inf
        close = (np.abs(va - vb) <= tol) | both_nan | (va == vb)
    assert close.all(), a.assign(loop=vb)[~close].head(10).to_string()


def _assert_same_run(ens: RunResult, ref: RunResult, store: Path) -> None:
    assert ens.status == ref.status
    assert set(ens.summary) == set(ref.summary)
    for key, value in ref.summary.items():
        if key == "seconds":
            continue
        if key == "probe_cost":  # its overhead is a measured time share; what was recorded must match
            assert {k: v for k, v in ens.summary[key].items() if k != "overhead"} == {
                k: v for k, v in value.items() if k != "overhead"}
            assert 0 < ens.summary[key]["overhead"] < 1
            continue
        if key == "structure":  # the ensemble reads no wiring: its members are plain stacks, as the loop finds
            assert ens.summary[key] is None and not (value["joins"] or value["norms"] or value["tied"])
            continue
        if isinstance(value, float) and math.isfinite(value):
            assert ens.summary[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        elif isinstance(value, float):
            assert not math.isfinite(ens.summary[key]), key
        else:
            assert ens.summary[key] == value, key
    _assert_same_stats(ens.frame, ref.frame)
    pd.testing.assert_frame_equal(ens.metrics, ref.metrics, rtol=1e-5, atol=1e-6)
    stored_ens, stored_ref = load_run(ens.run_id or "", store / "ens"), load_run(ref.run_id or "", store / "loop")
    model_ens, _ = load_model(stored_ens)
    model_ref, _ = load_model(stored_ref)
    for (name, p), (_, q) in zip(model_ens.named_parameters(), model_ref.named_parameters()):
        both = torch.isfinite(q)
        assert torch.equal(torch.isfinite(p), both), name
        torch.testing.assert_close(p[both], q[both], atol=1e-5, rtol=1e-4, msg=name)
    assert stored_ens.status == stored_ref.status
    assert set(stored_ens.meta) == set(stored_ref.meta)
    assert {k: stored_ens.meta[k] for k in ("experiment", "arm", "seed")} == {
        k: stored_ref.meta[k] for k in ("experiment", "arm", "seed")}
    assert stored_ens.meta["batch"] == "b-ens"
    assert stored_ens.config == stored_ref.config
    _assert_same_stats(stored_ens.frame(), stored_ref.frame())
    h_ens, h_ref = stored_ens.hists(), stored_ref.hists()
    assert len(h_ens) == len(h_ref)
    for (_, x), (_, y) in zip(h_ens.iterrows(), h_ref.iterrows()):
        assert (x["step"], x["layer"], x["tensor"], x["kind"]) == (y["step"], y["layer"], y["tensor"], y["kind"])
        np.testing.assert_allclose(x["edges"], y["edges"], rtol=1e-4, atol=1e-6)
        assert np.abs(np.asarray(x["counts"]) - np.asarray(y["counts"])).sum() <= 2  # an entry on a bin edge


def _check(runs: list[RunConfig], store: Path) -> list[RunResult]:
    ensemble, alone = _both(runs, store)
    assert [r.config for r in ensemble] == runs
    for ens, ref in zip(ensemble, alone):
        _assert_same_run(ens, ref, store)
    return ensemble


def test_three_activations_two_seeds_rmsprop(tmp_path: Path) -> None:
    exp = load_experiment("circles-deep", ["train.epochs=3"], seeds=2)
    assert can_ensemble(exp.runs)
    _check(exp.runs, tmp_path)


@pytest.mark.parametrize("sets", [
    ["optimizer.name=adam", "optimizer.lr=0.01"],
    ["optimizer.name=adam", "optimizer.weight_decay=0.1", "optimizer.lr=0.01"],
    ["optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.l2=0.01", "optimizer.momentum=0.9",
     "optimizer.weight_decay=0.01"],
    ["optimizer.name=rmsprop", "optimizer.momentum=0.5", "record.every=5", "record.hist_every=null",
     "train.eval_every=7", "train.batch_size=100"],
])
def test_optimizers_and_cadences(tmp_path: Path, sets: list[str]) -> None:
    exp = load_experiment("circles-deep", ["train.epochs=2", "model.init=glorot_uniform", *sets], seeds=1)
    _check(exp.runs, tmp_path)


def test_full_batch_spiral(tmp_path: Path) -> None:
    exp = load_experiment("spiral", ["train.iterations=40", "train.eval_every=10"], seeds=2)
    _check(exp.runs, tmp_path)


def test_diverging_member_is_masked(tmp_path: Path) -> None:
    base = load_experiment("circles-deep", ["train.epochs=2", "model.activation=relu"], seeds=3).runs
    huge = base[1].model_copy(update={"model": base[1].model.model_copy(update={"init": "normal:1e25"})})
    runs = [base[0], huge, base[2]]
    ensemble = _check(runs, tmp_path)
    assert [r.status for r in ensemble] == [R.FINISHED, R.DIVERGED, R.FINISHED]
    assert ensemble[1].summary["steps"] < ensemble[0].summary["steps"]


def test_grouping() -> None:
    runs = load_experiment("circles-deep", ["train.epochs=1"], seeds=2).runs
    glorot = [r.model_copy(update={"model": r.model.model_copy(update={"init": "glorot_uniform"})}) for r in runs]
    wide = runs[0].model_copy(update={"model": runs[0].model.model_copy(update={"width": 7})})
    maxout = runs[0].model_copy(update={"model": runs[0].model.model_copy(update={"activation": "maxout:2"})})
    assert can_ensemble(runs + glorot)
    assert not can_ensemble(runs + [wide])
    assert not can_ensemble([maxout])
    groups = group_configs([maxout, *runs, wide, *glorot])
    assert [len(g) for g in groups] == [1, len(runs) * 2, 1]
    assert groups[1] == runs + glorot
    with pytest.raises(GradprobeError, match="train_group"):
        train_group(runs + [wide], load_dataset(runs[0].data), None)


def test_every_elementwise_activation(tmp_path: Path) -> None:
    """Each activation's fused forward/backward kernel (ensemble_kernels) against autograd in run_one."""
    base = load_experiment("circles-deep", ["train.epochs=1", "model.init=glorot_uniform"], seeds=1).runs[0]
    acts = ["leaky_relu:0.1", "elu:0.5", "selu", "gelu", "silu", "softplus", "hard_sigmoid", "erf"]
    runs = [base.model_copy(update={"arm": f"a{i}", "model": base.model.model_copy(update={"activation": a})})
            for i, a in enumerate(acts)]
    assert can_ensemble(runs)
    linear = base.model_copy(update={"model": base.model.model_copy(update={"activation": "linear"})})
    assert not can_ensemble([linear])  # its probe delta rows come in another order (ensemble_kernels)
    _check(runs, tmp_path)

"""Every preset runs (shortened), and circles-deep with 3 seeds runs in full and shows what it should."""

from __future__ import annotations

import numpy as np
import pytest

from gradprobe import records as R
from gradprobe.store.reader import list_runs
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_experiment

SHORT = {
    "circles-deep": ["train.epochs=2"],
    "circles-glorot": ["train.epochs=2"],
    "circles-shallow": ["train.epochs=2"],
    "spiral": ["train.iterations=300"],
}


@pytest.mark.parametrize("name", sorted(SHORT))
def test_preset_runs_shortened(name, tmp_path):
    exp = load_experiment(name, SHORT[name])
    results = run_experiment(exp, tmp_path)
    assert [r.status for r in results] == [R.FINISHED] * len(exp.runs)
    assert len(list_runs(tmp_path)) == len(exp.runs)
    for r in results:
        assert 0.0 <= r.summary["train_accuracy"] <= 1.0 and np.isfinite(r.summary["final_loss"])
        assert np.isfinite(r.summary["vanishing_factor"])


def test_mnist_deep_shortened_on_real_mnist(shared_data, tmp_path):
    exp = load_experiment("mnist-deep", [f"data.data_dir={shared_data}", "data.limit=3000", "train.epochs=1",
                                         "record.every=10", "train.eval_every=10"])
    results = run_experiment(exp, tmp_path)
    assert [r.config.arm for r in results] == ["sigmoid", "relu", "leaky_relu"]
    for r in results:
        assert r.summary["test_accuracy"] is not None and r.summary["steps"] == 30
        assert r.summary["accuracy_before"] < 0.3  # chance level before training on 10 classes
    relu = results[1].summary
    assert relu["final_loss"] < relu["loss_before"] and relu["train_accuracy"] > relu["accuracy_before"]


@pytest.mark.slow
def test_circles_deep_three_seeds_in_full(tmp_path):
    results = run_experiment(load_experiment("circles-deep", seeds=3), tmp_path)
    acc = {arm: [r.summary["train_accuracy"] for r in results if r.config.arm == arm]
           for arm in ("sigmoid", "tanh", "relu")}
    median_factor = {arm: np.median([r.summary["vanishing_factor_median"] for r in results if r.config.arm == arm])
                     for arm in acc}
    # Sigmoid with N(0,1) weights learns worst, and its first layer gets far less gradient than the output layer.
    assert np.mean(acc["sigmoid"]) < min(np.mean(acc["tanh"]), np.mean(acc["relu"]))
    assert min(np.mean(acc["tanh"]), np.mean(acc["relu"])) > 0.9
    assert median_factor["sigmoid"] > 3 and median_factor["sigmoid"] > 10 * max(median_factor["tanh"],
                                                                                  median_factor["relu"])

"""The training loop: determinism, records on the preset cadence, divergence, and the stored run."""

from __future__ import annotations

import math

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.data.datasets import load_dataset
from gradprobe.store.reader import load_run
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer
from gradprobe.train.predict import class_probabilities, load_model
from gradprobe.train.runner import run_experiment, run_one


def test_circles_deep_short_run_is_stored_and_deterministic(tmp_path):
    exp = load_experiment("circles-deep", ["train.epochs=3"])
    cfg = exp.runs[2]  # relu
    a = run_one(cfg, tmp_path)
    b = run_one(cfg, None)
    pd_a, pd_b = a.frame.sort_values(list(R.STAT_COLUMNS[:5])), b.frame.sort_values(list(R.STAT_COLUMNS[:5]))
    assert np.array_equal(pd_a.value.to_numpy(), pd_b.value.to_numpy(), equal_nan=True)
    run = load_run(a.run_id, tmp_path)
    assert run.status == R.FINISHED and run.meta["arm"] == "relu"
    stored = run.frame().sort_values(list(R.STAT_COLUMNS[:5]))
    np.testing.assert_allclose(stored.value.to_numpy(), pd_a.value.to_numpy(), rtol=1e-6)  # float32 on disk
    # Grad records at the first batch of each epoch (32 steps per epoch), weights also at the end.
    assert sorted(stored[stored.kind == R.GRAD].step.unique()) == [0, 32, 64]
    assert 96 in set(stored[stored.kind == R.WEIGHT].step)
    metrics = run.metrics()
    acc = metrics[(metrics.split == R.TRAIN) & (metrics.metric == R.ACCURACY)]
    assert list(acc.step) == [0, 32, 64, 96]
    assert acc.value.iloc[-1] == run.summary["train_accuracy"]


def test_summary_numbers_match_an_independent_evaluation(tmp_path):
    exp = load_experiment("circles-deep", ["train.epochs=2"])
    result = run_one(exp.runs[1], tmp_path)
    model, cfg = load_model(load_run(result.run_id, tmp_path))
    data = load_dataset(cfg.data)
    probs = class_probabilities(model, data.x_train.numpy())
    accuracy = float((probs.argmax(1) == data.y_train.numpy()).mean())
    assert accuracy == result.summary["train_accuracy"]
    p1 = np.clip(probs[:, 1], 1e-12, 1 - 1e-12)
    y = data.y_train.numpy()
    bce = float(-(y * np.log(p1) + (1 - y) * np.log(1 - p1)).mean())
    assert math.isclose(bce, result.summary["final_loss"], rel_tol=1e-4)
    frame = result.frame
    grads = frame[(frame.kind == R.GRAD) & (frame.stat == R.MEAN_ABS)]
    tail = grads.step.max()
    first = grads[(grads.step == tail) & (grads.layer == "layers.0") & (grads.tensor == "weight")].value.item()
    last = grads[(grads.step == tail) & (grads.layer == "layers.8") & (grads.tensor == "weight")].value.item()
    assert math.isclose(result.summary["vanishing_factor"], last / first, rel_tol=1e-6)  # tail = 1 step of 2


def test_divergence_is_data_not_a_crash(tmp_path):
    exp = load_experiment("circles-deep", ["train.epochs=3", "optimizer.name=sgd", "optimizer.lr=1e20",
                                           "model.activation=relu", "record.every=1", "record.hist_every=1"])
    result = run_one(exp.runs[0], tmp_path)
    assert result.status == R.DIVERGED
    assert result.summary["steps"] < 96
    first = result.summary["first_nonfinite"]
    run = load_run(result.run_id, tmp_path)
    assert run.status == R.DIVERGED and run.summary["first_nonfinite"] == first
    frame = run.frame()
    counted = frame[(frame.stat == R.NONFINITE) & (frame.value > 0)]
    assert first["step"] == counted.step.min() and len(frame[frame.step < first["step"]]) > 0
    assert len(run.hists()) > 0  # histograms of exploding values are data too


def test_full_batch_iterations_and_l2(tmp_path):
    exp = load_experiment("spiral", ["train.iterations=30", "train.eval_every=10"])
    results = run_experiment(exp, tmp_path)
    assert [r.summary["steps"] for r in results] == [30, 30]
    frame = results[0].frame
    heur = frame[(frame.stat == R.SUM_ABS_PER_SHAPE)]
    assert sorted(heur.step.unique()) == list(range(30)) and set(heur.tensor) == {"weight"}
    abs_mean = frame[(frame.stat == R.MEAN_ABS) & (frame.layer == "layers.2")].set_index("step").value
    # sum|dW| / sum(shape) = mean|dW| * 50*50 / (50+50)
    np.testing.assert_allclose(heur[heur.layer == "layers.2"].set_index("step").value, abs_mean * 25, rtol=1e-5)


def test_trainer_sees_the_l2_gradient():
    exp = load_experiment("spiral", ["train.iterations=1", "optimizer.l2=0.5"])
    cfg = exp.runs[1]
    data = load_dataset(cfg.data)
    trainer = Trainer(cfg, data)
    w0 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    model = trainer.model
    x, y = data.x_train.to(next(model.parameters()).dtype), data.y_train  # the spiral preset trains in float64
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y) + 0.25 * sum((p * p).sum() for p in model.parameters()
                                                                     if p.dim() >= 2)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    trainer.run()
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.detach(), w0[name] - 0.1 * g, rtol=1e-5, atol=1e-6)

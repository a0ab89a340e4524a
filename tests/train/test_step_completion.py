"""What the trainer records around one optimiser step: the data-loss gradient, and the whole update.

Guards two fixes: the L2 term used to be in the recorded gradient (the CS231n heuristic is of the
data loss), and decoupled weight decay used to happen before the probe's weight snapshot, so the
update ratio left it out. The oracle is p.grad of the data loss and weight copies taken here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gradprobe import records as R
from gradprobe.data.datasets import load_dataset
from gradprobe.train import setup
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer

Weights = dict[str, torch.Tensor]


def _one_step(sets: list[str]) -> tuple[pd.DataFrame, Weights, Weights, Weights]:
    """Run one full-batch step; returns the recorded frame, the weights before/after it and dL_data/dW."""
    cfg = load_experiment("circles-deep", ["train.epochs=null", "train.iterations=1", "train.batch_size=null",
                                           "record.every=1", "model.init=glorot_uniform", *sets]).runs[2]
    data = load_dataset(cfg.data)
    trainer = Trainer(cfg, data)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits = model(data.x_train)
    data_loss = setup.objective(logits, data.y_train, trainer.loss)
    names, params = zip(*model.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(data_loss, list(params))))
    frame = trainer.run().frame
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return frame, before, after, grads


def _recorded(frame: pd.DataFrame, name: str, kind: str, stat: str) -> float:
    layer, _, tensor = name.rpartition(".")
    sel = frame[(frame.step == 0) & (frame.layer == layer) & (frame.tensor == tensor) & (frame.kind == kind)
                & (frame.stat == stat)]
    return float(sel.value.item())


@pytest.mark.parametrize("sets", [
    ["optimizer.name=sgd", "optimizer.lr=0.5", "optimizer.weight_decay=0.2"],
    ["optimizer.name=rmsprop", "optimizer.lr=0.01", "optimizer.weight_decay=0.3", "optimizer.l2=0.1"],
    ["optimizer.name=adam", "optimizer.lr=0.01", "optimizer.weight_decay=0.3"],
])
def test_update_ratio_includes_decoupled_weight_decay(sets: list[str]) -> None:
    frame, before, after, _ = _one_step(sets)
    for name in before:
        want = float(torch.linalg.vector_norm(after[name] - before[name]) / torch.linalg.vector_norm(before[name]))
        if not np.isfinite(want):  # a zero bias moved: ratio inf in both
            continue
        assert _recorded(frame, name, R.WEIGHT, R.UPDATE_RATIO) == pytest.approx(want, rel=1e-5)


def test_recorded_gradient_is_of_the_data_loss_and_the_step_of_the_total() -> None:
    sets = ["optimizer.name=sgd", "optimizer.lr=0.5", "optimizer.l2=0.3"]
    frame, before, after, grads = _one_step(sets)
    for name, g in grads.items():
        assert _recorded(frame, name, R.GRAD, R.NORM) == pytest.approx(float(torch.linalg.vector_norm(g)), rel=1e-5)
        total = g + 0.3 * before[name] if before[name].dim() >= 2 else g  # L2 covers weight matrices only
        torch.testing.assert_close(after[name], before[name] - 0.5 * total, rtol=1e-5, atol=1e-7)

"""Rebuild a stored run's trained model and evaluate it, e.g. over the input plane for a decision boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradprobe.data.datasets import load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.models.mlp import MLP
from gradprobe.store.atomic import atomic_path
from gradprobe.store.layout import MODEL
from gradprobe.store.reader import Run
from gradprobe.train import setup
from gradprobe.train.config import RunConfig


def load_model(run: Run) -> tuple[MLP, RunConfig]:
    """The run's final model (weights read with ``weights_only=True``) and its validated config.

    Raises:
        GradprobeError: if the run stored no model (it failed early, or predates model saving).
    """
    path = run.path / MODEL
    if not path.is_file():
        raise GradprobeError(f"run: {run.run_id!r} has no stored model ({MODEL}); re-run it")
    cfg = RunConfig.model_validate(run.config)
    data = load_dataset(cfg.data)
    model = setup.build_model(cfg.model_copy(update={"device": "cpu"}), data, setup.loss_kind(cfg, data))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), cfg


def save_model(run_path: Path, model: torch.nn.Module) -> None:
    """Store a run's final weights (a state dict, read back by :func:`load_model` with ``weights_only``)."""
    with atomic_path(run_path / MODEL) as tmp:
        torch.save(model.state_dict(), tmp)


@torch.no_grad()
def class_probabilities(model: MLP, points: np.ndarray) -> np.ndarray:
    """Class probabilities (n, classes) of ``points`` (n, features); one logit means a sigmoid output."""
    logits = model(torch.as_tensor(points, dtype=next(model.parameters()).dtype))  # float64 runs (train.dtype)
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=-1).numpy()
    return torch.softmax(logits, dim=-1).numpy()


__all__ = ["class_probabilities", "load_model", "save_model"]

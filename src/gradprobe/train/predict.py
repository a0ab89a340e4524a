"""A run's final outputs: its weights and, on 2-D data, its decision-boundary grid; rebuilding the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.models.mlp import MLP
from gradprobe.store.artifacts import BoundaryGrid, load_model_state, save_boundary, save_model_state
from gradprobe.store.reader import Run
from gradprobe.train import setup
from gradprobe.train.config import RunConfig

PLANE_DATA = ("circles", "moons", "xor", "spiral")  # data sets whose inputs are 2-D points
BOUNDARY_RESOLUTION = 200  # grid points along each axis of the stored decision boundary
BOUNDARY_MARGIN = 0.1  # room around the data on each side, as a fraction of its range


def load_model(run: Run) -> tuple[MLP, RunConfig]:
    """The run's final model (weights read through the store with ``weights_only=True``) and its config.

    Raises:
        GradprobeError: if the run stored no model (it failed early, or predates model saving).
    """
    state = load_model_state(run.path)
    cfg = RunConfig.model_validate(run.config)
    data = load_dataset(cfg.data)
    model = setup.build_model(cfg.model_copy(update={"device": "cpu"}), data, setup.loss_kind(cfg, data))
    model.load_state_dict(state)
    return model.eval(), cfg


def save_outputs(run_path: Path, model: torch.nn.Module, data: Dataset) -> None:
    """Store a run's final weights and, if ``data`` is 2-D, the model's decision-boundary grid over it."""
    save_model_state(run_path, model.state_dict())
    if data.name in PLANE_DATA:
        save_boundary(run_path, boundary_grid(model, data))


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, points: np.ndarray) -> np.ndarray:
    """Class probabilities (n, classes) of ``points`` (n, features); one logit means a sigmoid output."""
    first = next(model.parameters())  # float64 runs (train.dtype), any device
    was = model.training
    model.eval()
    try:
        logits = model(torch.as_tensor(points, dtype=first.dtype, device=first.device))  # (n, classes or 1)
    finally:
        model.train(was)
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=-1).cpu().numpy()
    return torch.softmax(logits, dim=-1).cpu().numpy()


def boundary_grid(model: torch.nn.Module, data: Dataset, resolution: int = BOUNDARY_RESOLUTION,
                  margin: float = BOUNDARY_MARGIN) -> BoundaryGrid:
    """Class probabilities of ``model`` over a grid covering ``data`` (train and test points).

    Args:
        model: a trained model on 2-D inputs.
        data: the data set it trained on.
        resolution: grid points along each axis (>= 2).
        margin: extra room on each side, as a fraction of the data's range.

    Returns:
        The grid (``probs`` shape (resolution, resolution, classes)) with the data points and
        the model's accuracy on them; its ``arm`` is left empty.

    Raises:
        GradprobeError: if the data is not 2-D or the resolution is below 2.
    """
    if resolution < 2:
        raise GradprobeError(f"resolution: {resolution!r} is too small; allowed: integers >= 2")
    if data.n_features != 2:
        raise GradprobeError(f"data: {data.name!r} has {data.n_features} features, not 2; a decision "
                             f"boundary needs one of {', '.join(PLANE_DATA)}")
    xs_, ys_ = [data.x_train.numpy()], [data.y_train.numpy()]
    if data.x_test is not None and data.y_test is not None:
        xs_.append(data.x_test.numpy())
        ys_.append(data.y_test.numpy())
    points = np.concatenate(xs_).astype(np.float64)  # (n, 2)
    labels = np.concatenate(ys_).astype(np.int64)  # (n,)
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = (hi - lo) * margin
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)  # (nx,)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)  # (ny,)
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx) each
    plane = np.column_stack([gx.ravel(), gy.ravel()])  # (ny * nx, 2)
    probs = class_probabilities(model, plane).reshape(resolution, resolution, -1)  # (ny, nx, C)
    accuracy = float(np.mean(class_probabilities(model, points).argmax(axis=1) == labels))
    return BoundaryGrid(xs=xs, ys=ys, probs=probs, points=points, labels=labels, accuracy=accuracy)


__all__ = ["BOUNDARY_MARGIN", "BOUNDARY_RESOLUTION", "PLANE_DATA", "boundary_grid", "class_probabilities",
           "load_model", "save_outputs"]

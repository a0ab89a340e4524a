"""Evaluate a stored run's model over the 2-D input plane for the decision-boundary figure."""

from __future__ import annotations

import numpy as np

from gradprobe.data.datasets import load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.plots.boundary import BoundaryGrid
from gradprobe.plots.select import arm_of
from gradprobe.store.reader import Run
from gradprobe.train.predict import class_probabilities, load_model

__all__ = ["PLANE_DATA", "boundary_grid", "is_planar"]

PLANE_DATA = ("circles", "moons", "xor", "spiral")  # data sets whose inputs are 2-D points


def is_planar(run: Run) -> bool:
    """Whether the run trained on a 2-D data set (so it has a decision boundary to draw)."""
    return (run.config.get("data") or {}).get("name", "circles") in PLANE_DATA


def boundary_grid(run: Run, resolution: int = 200, margin: float = 0.1) -> BoundaryGrid:
    """Class probabilities of the run's final model over a grid covering its data.

    Args:
        run: a finished run on a 2-D data set, with its stored model.
        resolution: grid points along each axis (>= 2).
        margin: extra room on each side, as a fraction of the data's range.

    Returns:
        The grid (``probs`` shape (resolution, resolution, classes)) with the training points
        (and test points, if any) and the model's accuracy on them.

    Raises:
        GradprobeError: if the data is not 2-D, the resolution is below 2, or no model is stored.
    """
    if resolution < 2:
        raise GradprobeError(f"resolution: {resolution!r} is too small; allowed: integers >= 2")
    if not is_planar(run):
        name = (run.config.get("data") or {}).get("name")
        raise GradprobeError(f"run {run.run_id}: data {name!r} is not 2-D; a decision boundary "
                             f"needs one of {', '.join(PLANE_DATA)}")
    model, cfg = load_model(run)
    data = load_dataset(cfg.data)
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
    return BoundaryGrid(arm_of(run), xs, ys, probs, points, labels, accuracy)

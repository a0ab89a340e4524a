"""A stored run's decision-boundary grid, read from the store (computed when the run finished)."""

from __future__ import annotations

from gradprobe.plots.select import arm_of
from gradprobe.store.artifacts import BoundaryGrid, load_boundary
from gradprobe.store.reader import Run

__all__ = ["boundary_grid"]


def boundary_grid(run: Run) -> BoundaryGrid:
    """Class probabilities of the run's final model over a grid covering its data, as stored.

    Args:
        run: a finished run on a 2-D data set.

    Returns:
        The grid (``probs`` shape (ny, nx, classes)) with the training points (and test points,
        if any), the model's accuracy on them, and the run's arm as its title.

    Raises:
        GradprobeError: if the run stored no grid (data not 2-D, or made before grids were stored).
    """
    return load_boundary(run.path, arm_of(run))

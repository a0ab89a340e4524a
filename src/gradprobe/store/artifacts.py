"""A run's files beside its records: final weights, checkpoints and the decision-boundary grid.

Weights and checkpoints are torch state dicts, read back with ``weights_only=True`` (nothing is
unpickled); the boundary grid is an ``.npz`` of plain arrays, read with ``allow_pickle=False``.
Every file is written atomically. torch is imported where it is used, so commands that only read
records start fast.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradprobe.errors import GradprobeError
from gradprobe.store.atomic import atomic_path
from gradprobe.store.layout import BOUNDARY, MODEL, PART_KINDS
from gradprobe.store.reader import part_files

if TYPE_CHECKING:
    import torch

__all__ = [
    "BoundaryGrid",
    "count_parts",
    "drop_later_parts",
    "has_boundary",
    "load_boundary",
    "load_model_state",
    "read_checkpoint",
    "remove_checkpoint",
    "save_boundary",
    "save_model_state",
    "write_checkpoint",
]

_ARRAYS = ("xs", "ys", "probs", "points", "labels", "accuracy")  # the fields stored in BOUNDARY


@dataclass(frozen=True)
class BoundaryGrid:
    """A model's class probabilities over a grid of the input plane, and the data it saw."""

    xs: np.ndarray  # (nx,) grid x coordinates
    ys: np.ndarray  # (ny,) grid y coordinates
    probs: np.ndarray  # (ny, nx, classes) class probabilities at (xs[j], ys[i])
    points: np.ndarray  # (n, 2) data points
    labels: np.ndarray  # (n,) int class of each point
    accuracy: float | None = None  # accuracy on ``points``, shown in the title
    arm: str = ""  # panel title; not stored: the reader of a run sets it from the run's meta

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class (ny, nx): argmax of ``probs``."""
        return np.argmax(self.probs, axis=-1)


def _torch_save(path: Path, obj: Any) -> None:
    """Write ``obj`` with torch.save through a temporary file, fsync and rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _torch_load(path: Path, what: str, fix: str) -> Any:
    """Read ``path`` with ``weights_only=True`` onto the CPU.

    Raises:
        GradprobeError: naming ``what`` and ``fix`` if the file is not a readable state dict.
    """
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradprobeError(f"{what}: {str(path)!r} is not a readable {what} ({first}); {fix}") from None


def save_model_state(run_path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Store a run's final weights (a state dict) as ``<run>/model.pt``."""
    _torch_save(run_path / MODEL, dict(state))


def load_model_state(run_path: Path) -> dict[str, torch.Tensor]:
    """The run's final weights on the CPU, read with ``weights_only=True``.

    Raises:
        GradprobeError: if the run stored no model (it failed early, or predates model saving)
            or the file is not readable.
    """
    path = run_path / MODEL
    if not path.is_file():
        raise GradprobeError(f"run: {run_path.name!r} has no stored model ({MODEL}); re-run it")
    state = _torch_load(path, "model", "re-run it")
    if not isinstance(state, dict):
        raise GradprobeError(f"model: {str(path)!r} holds a {type(state).__name__}, not a state dict; re-run it")
    return state


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint (tensors, numbers, lists and dicts only) to ``path`` atomically."""
    _torch_save(path, state)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """Read a checkpoint with ``weights_only=True`` (nothing is unpickled); None if there is none.

    Raises:
        GradprobeError: if the file exists but is not a readable checkpoint.
    """
    if not path.is_file():
        return None
    fix = "delete it to restart the run from step 0"
    state = _torch_load(path, "checkpoint", fix)
    if not isinstance(state, dict):
        raise GradprobeError(f"checkpoint: {str(path)!r} is not a readable checkpoint "
                             f"(it holds a {type(state).__name__}); {fix}")
    return state


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint once the run is complete (nothing left to resume); no error if absent."""
    path.unlink(missing_ok=True)


def count_parts(run_path: Path) -> dict[str, int]:
    """Number of part files of each kind in a run directory (remembered by a checkpoint)."""
    return {kind: len(part_files(run_path, kind)) for kind in PART_KINDS}


def drop_later_parts(run_path: Path, parts: dict[str, int]) -> int:
    """Delete the part files written after a checkpoint (index > ``parts[kind]``).

    Args:
        run_path: the run directory.
        parts: part files per kind when the checkpoint was written (missing kind: 0).

    Returns:
        The number of files deleted.
    """
    dropped = 0
    for kind in PART_KINDS:
        for extra in part_files(run_path, kind)[parts.get(kind, 0):]:
            with contextlib.suppress(FileNotFoundError):
                extra.unlink()
                dropped += 1
    return dropped


def save_boundary(run_path: Path, grid: BoundaryGrid) -> None:
    """Store the grid's arrays (not its arm) as ``<run>/boundary.npz``, atomically; probabilities as float32."""
    accuracy = np.asarray(np.nan if grid.accuracy is None else grid.accuracy, np.float64)
    with atomic_path(run_path / BOUNDARY) as tmp, open(tmp, "wb") as fh:  # a handle: savez would add ".npz"
        np.savez_compressed(fh, xs=grid.xs, ys=grid.ys, probs=grid.probs.astype(np.float32), points=grid.points,
                            labels=grid.labels, accuracy=accuracy)


def has_boundary(run_path: Path) -> bool:
    """Whether the run stored a decision-boundary grid (runs on 2-D data do, when they finish)."""
    return (run_path / BOUNDARY).is_file()


def load_boundary(run_path: Path, arm: str = "") -> BoundaryGrid:
    """The run's stored decision-boundary grid, with ``arm`` as its panel title.

    Raises:
        GradprobeError: if the run stored none (data not 2-D, or made before grids were stored),
            or the file is not a readable grid.
    """
    path = run_path / BOUNDARY
    if not path.is_file():
        raise GradprobeError(f"run: {run_path.name!r} stored no decision-boundary grid ({BOUNDARY}); "
                             "only finished runs on 2-D data (circles, moons, xor, spiral) have one")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise GradprobeError(f"boundary: {str(path)!r} is not a readable grid ({exc}); "
                             "re-run the run to store it again") from None
    accuracy = float(arrays.pop("accuracy"))
    return BoundaryGrid(**arrays, accuracy=None if np.isnan(accuracy) else accuracy, arm=arm)

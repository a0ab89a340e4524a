"""Checkpoints of a training run (model, optimiser, counters) so an interrupted run can resume.

A checkpoint is written only at a step boundary, after every record made so far has been
flushed to part files; it remembers how many part files of each kind existed then. Resuming
deletes the part files written after the checkpoint, so the resumed run holds each step once:
records made between the last checkpoint and the kill are dropped and made again.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradprobe.errors import GradprobeError
from gradprobe.store.atomic import atomic_path
from gradprobe.store.layout import PART_KINDS
from gradprobe.store.reader import part_files

# With no train.checkpoint_every, a run with a store checkpoints about this many times.
DEFAULT_CHECKPOINTS = 10


@dataclass
class Checkpoint:
    """Everything needed to continue a run at ``step`` exactly as if it had not stopped."""

    step: int  # optimizer steps done
    model: dict[str, torch.Tensor]  # model.state_dict()
    optimizer: dict[str, Any]  # optimizer.state_dict()
    metrics: list[list[Any]] = field(default_factory=list)  # rows of METRIC_COLUMNS so far
    parts: dict[str, int] = field(default_factory=dict)  # part files per kind at checkpoint time
    counters: dict[str, Any] = field(default_factory=dict)  # seconds, nonfinite steps, before, ...


def checkpoint_cadence(every: int | None, steps_per_epoch: int, total_steps: int) -> int:
    """Steps between checkpoints: ``every``, else about DEFAULT_CHECKPOINTS per run in whole epochs.

    Args:
        every: ``train.checkpoint_every`` (None: the default cadence).
        steps_per_epoch: optimizer steps per epoch (>= 1).
        total_steps: optimizer steps of the whole run.

    Returns:
        A cadence >= 1 in optimizer steps.
    """
    if every is not None:
        return every
    epochs = max(1, math.ceil(total_steps / max(1, steps_per_epoch) / DEFAULT_CHECKPOINTS))
    return epochs * max(1, steps_per_epoch)


def count_parts(run_path: Path) -> dict[str, int]:
    """Number of part files of each kind in a run directory."""
    return {kind: len(part_files(run_path, kind)) for kind in PART_KINDS}


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` with torch.save through a temporary file, fsync and rename."""
    with atomic_path(path) as tmp:
        torch.save(asdict(ckpt), tmp)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """Read a checkpoint with ``weights_only=True`` (nothing is unpickled); None if there is none.

    Raises:
        GradprobeError: if the file exists but is not a readable checkpoint.
    """
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(**raw)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradprobeError(
            f"checkpoint: {str(path)!r} is not a readable checkpoint ({first}); "
            "delete it to restart the run from step 0"
        ) from None


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


__all__ = [
    "DEFAULT_CHECKPOINTS",
    "Checkpoint",
    "checkpoint_cadence",
    "count_parts",
    "drop_later_parts",
    "load_checkpoint",
    "save_checkpoint",
]

"""Checkpoints of a training run (model, optimiser, counters) so an interrupted run can resume.

A checkpoint is written only at a step boundary, after every record made so far has been
flushed to part files; it remembers how many part files of each kind existed then. Resuming
deletes the part files written after the checkpoint, so the resumed run holds each step once:
records made between the last checkpoint and the kill are dropped and made again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradprobe.errors import GradprobeError
from gradprobe.store.artifacts import read_checkpoint, write_checkpoint

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


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` (``<run>/checkpoint.pt``) atomically, through the store."""
    write_checkpoint(path, asdict(ckpt))


def load_checkpoint(path: Path) -> Checkpoint | None:
    """Read the checkpoint at ``path`` (nothing is unpickled); None if there is none.

    Raises:
        GradprobeError: if the file exists but is not a readable checkpoint.
    """
    raw = read_checkpoint(path)
    if raw is None:
        return None
    try:
        return Checkpoint(**raw)
    except TypeError as exc:
        raise GradprobeError(f"checkpoint: {str(path)!r} is not a readable checkpoint ({exc}); "
                             "delete it to restart the run from step 0") from None


__all__ = [
    "DEFAULT_CHECKPOINTS",
    "Checkpoint",
    "checkpoint_cadence",
    "load_checkpoint",
    "save_checkpoint",
]

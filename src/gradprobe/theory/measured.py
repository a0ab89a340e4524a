"""The per-layer gradient ratio a stored run measured at its first recorded step, to set beside theory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import Run

__all__ = ["MeasuredRatio", "measured_ratio"]


@dataclass(frozen=True)
class MeasuredRatio:
    """Mean squared weight gradient per layer at one step, and its ratio to the last layer."""

    step: int
    layers: tuple[str, ...]  # weight parameter names, first layer first
    mean_square: tuple[float, ...]  # norm^2 / numel per layer
    ratio: tuple[float, ...]  # mean_square / mean_square of the last layer


def measured_ratio(run: Run) -> MeasuredRatio:
    """Read the per-layer mean squared weight gradient at the first recorded step of a run.

    ``numel`` comes from the recorded stats themselves: with ``std`` unbiased,
    ``norm^2 = (n - 1) std^2 + n mean^2``, so ``n = (norm^2 + std^2) / (std^2 + mean^2)``.

    Args:
        run: A stored run with grad ``norm``, ``std`` and ``mean`` of its weights.

    Returns:
        The measured ratios (nan for a layer whose last-layer reference is 0).

    Raises:
        GradprobeError: If the run recorded no weight gradients with these three stats.
    """
    frame = run.frame(kind=R.GRAD, stat=[R.NORM, R.STD, R.MEAN])
    frame = frame[frame["tensor"] == "weight"]
    if frame.empty:
        raise GradprobeError(
            f"run: {run.run_id!r} has no grad norm/std/mean of weights; allowed: runs recorded "
            "with those grad_stats (the default)"
        )
    step = int(frame["step"].min())
    wide = frame[frame["step"] == step].pivot_table(
        index="layer", columns="stat", values="value", aggfunc="first")
    if not {R.NORM, R.STD, R.MEAN} <= set(wide.columns):
        raise GradprobeError(f"run: {run.run_id!r} lacks one of grad norm/std/mean at step {step}; "
                             "allowed: runs recorded with all three grad_stats")
    names = [n.removesuffix(".weight") for n in run.summary.get("weight_layers") or []]
    order = [n for n in names if n in wide.index] or sorted(
        wide.index, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    wide = wide.loc[order]
    ms = _mean_square(wide[R.NORM], wide[R.STD], wide[R.MEAN])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ms / ms[-1]
    return MeasuredRatio(step, tuple(f"{n}.weight" for n in order), tuple(ms.tolist()),
                         tuple(ratio.tolist()))


def _mean_square(norm: pd.Series, std: pd.Series, mean: pd.Series) -> np.ndarray:
    """``norm^2 / numel`` with numel recovered from the unbiased std (see measured_ratio)."""
    sq = norm.to_numpy() ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        numel = np.round((sq + std.to_numpy() ** 2) / (std.to_numpy() ** 2 + mean.to_numpy() ** 2))
        return np.where(sq == 0, 0.0, sq / numel)

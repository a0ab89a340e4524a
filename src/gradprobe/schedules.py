"""Schedules decide on which optimizer steps the probe records: callables from step to bool."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from gradprobe.errors import GradprobeError

Schedule = Callable[[int], bool]


def every(n: int, start: int = 0) -> Schedule:
    """Record on steps ``start, start + n, start + 2n, ...`` (``every(1)`` records every step).

    Raises:
        GradprobeError: if ``n < 1``.
    """
    if not isinstance(n, int) or n < 1:
        raise GradprobeError(f"every: {n!r} is not a valid cadence; use an integer >= 1")
    return lambda step: step >= start and (step - start) % n == 0


def at(steps: Iterable[int]) -> Schedule:
    """Record exactly on the given steps."""
    wanted = frozenset(int(s) for s in steps)
    return wanted.__contains__


def log_spaced(n_points: int, last_step: int) -> Schedule:
    """About ``n_points`` steps spaced evenly on a log scale over ``[0, last_step]``.

    Early training changes fastest, so logarithmic spacing resolves it without
    flooding the store with late, nearly identical steps.
    """
    if n_points < 1 or last_step < 0:
        raise GradprobeError(
            f"log_spaced: ({n_points}, {last_step}) is not valid; use n_points >= 1 and last_step >= 0"
        )
    points = np.unique(np.round(np.geomspace(1, last_step + 1, n_points)).astype(int) - 1)
    return at(points.tolist())


def never(step: int) -> bool:
    """A schedule that never records (e.g. histograms switched off)."""
    return False


def as_schedule(value: int | Schedule | None) -> Schedule:
    """Turn an ``every=`` argument (int, schedule or None) into a schedule; None means never."""
    if value is None:
        return never
    if callable(value):
        return value
    return every(value)


__all__ = ["Schedule", "as_schedule", "at", "every", "log_spaced", "never"]

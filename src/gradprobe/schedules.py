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


#: What a cadence in a config may be, as the one-line errors say it.
CADENCE_FORMS = "an integer >= 1, 'epoch', 'log_spaced:N' (N >= 1 points) or 'at:S1,S2,...' (steps >= 0)"


def parse_cadence(field: str, value: int | str) -> tuple[str, tuple[int, ...]]:
    """Split a config cadence into its form and numbers: ``("every", (10,))``, ``("epoch", ())``, ...

    Raises:
        ValueError: one line naming ``field``, the value and the allowed forms (pydantic shows it as is).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return "every", (value,)
    elif isinstance(value, str):
        name, sep, args = value.partition(":")
        numbers = [a.strip() for a in args.split(",")] if sep else []
        if all(a.isdigit() for a in numbers):
            parsed = tuple(int(a) for a in numbers)
            if (name == "epoch" and not sep) or (name == "log_spaced" and len(parsed) == 1 and parsed[0] >= 1) or (
                    name == "at" and parsed):
                return name, parsed
    raise ValueError(f"{field}: {value!r} is not a cadence; allowed: {CADENCE_FORMS}")


def cadence_schedule(value: int | str, steps_per_epoch: int, last_step: int) -> Schedule:
    """The schedule of a config cadence for a run of steps ``0 .. last_step`` with ``steps_per_epoch``.

    ``10`` is ``every(10)``, ``"epoch"`` is ``every(steps_per_epoch)``, ``"log_spaced:N"`` is
    ``log_spaced(N, last_step)`` and ``"at:0,10,100"`` is ``at([0, 10, 100])``.
    """
    form, numbers = parse_cadence("cadence", value)
    if form == "every":
        return every(numbers[0])
    if form == "epoch":
        return every(steps_per_epoch)
    if form == "log_spaced":
        return log_spaced(numbers[0], max(last_step, 0))
    return at(numbers)


def as_schedule(value: int | Schedule | None) -> Schedule:
    """Turn an ``every=`` argument (int, schedule or None) into a schedule; None means never."""
    if value is None:
        return never
    if callable(value):
        return value
    return every(value)


__all__ = [
    "CADENCE_FORMS",
    "Schedule",
    "as_schedule",
    "at",
    "cadence_schedule",
    "every",
    "log_spaced",
    "never",
    "parse_cadence",
]

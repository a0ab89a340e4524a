"""The probe's cadence and its own clock: a fixed schedule, or a cost budget the probe keeps by timing itself.

Under a budget the probe records step 0 and every power of two (1, 2, 4, 8, ...: dense early in
training, where vanishing shows first), at least every :data:`MAX_GAP` steps, and any other step
when recording it, at the cost its last recorded step took, keeps the time spent inside the probe
(hooks, step records, flushes) at most ``budget`` of the wall time since it was attached. The
forced records cost ``c * log2(steps)``: more than the budget only in runs shorter than about
``c / (budget * t) * log2(steps)`` steps (``c``: one recorded step's cost, ``t``: one training step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradprobe.errors import GradprobeError
from gradprobe.schedules import Schedule

Clock = Callable[[], float]
MAX_GAP = 1000  # under a budget, a record at least every MAX_GAP steps, whatever it costs


def _forced(step: int, last: int | None) -> bool:
    """Step 0, powers of two, and MAX_GAP steps after the last record."""
    return step & (step - 1) == 0 or last is None or step - last >= MAX_GAP


class Cadence:
    """Decides once per step whether the probe records, and accounts the time the probe spends.

    Args:
        schedule: a fixed schedule ``step -> bool``, used when ``budget`` is None.
        budget: the largest share of wall time the probe may take (e.g. 0.02), or None.
        clock: seconds as a float, e.g. ``time.perf_counter`` (tests pass a fake one).
    """

    def __init__(self, schedule: Schedule, budget: float | None, clock: Clock) -> None:
        if budget is not None and not 0 < budget < 1:
            raise GradprobeError(f"budget: {budget!r} is not a share of run time; use a float in (0, 1), e.g. 0.02")
        self.schedule, self.budget, self.clock = schedule, budget, clock
        self.spent = 0.0  # seconds inside the probe since it was attached
        self.recorded = 0
        self._start = clock()
        self._step, self._due = -1, False
        self._last: int | None = None
        self._spent_at_step, self._last_cost = 0.0, 0.0

    def due(self, step: int) -> bool:
        """Whether ``step`` is recorded; decided at its first query, then fixed for the step."""
        if step != self._step:
            if self._due:  # everything spent since the last recorded step began is its cost
                self._last_cost = self.spent - self._spent_at_step
            self._step, self._spent_at_step = step, self.spent
            self._due = self.schedule(step) if self.budget is None else self._affordable(step)
            if self._due:
                self.recorded, self._last = self.recorded + 1, step
        return self._due

    def _affordable(self, step: int) -> bool:
        assert self.budget is not None
        if _forced(step, self._last):
            return True
        cost = self._last_cost
        return self.spent + cost <= self.budget * (self.clock() - self._start + cost)

    def spend(self, since: float) -> None:
        """Account the probe's time from ``since`` (a reading of :attr:`clock`) to now."""
        self.spent += self.clock() - since

    def report(self, steps: int) -> dict[str, Any]:
        """``{budget, overhead, recorded_steps, steps}``: overhead is probe time over wall time since attach."""
        wall = self.clock() - self._start
        return {"budget": self.budget, "overhead": self.spent / wall if wall > 0 else 0.0,
                "recorded_steps": self.recorded, "steps": steps}


__all__ = ["MAX_GAP", "Cadence", "Clock"]

"""The probe's cadence and its own clock: a fixed schedule, or a cost budget the probe keeps by timing itself.

Under a budget the probe records step 0 and every power of two (1, 2, 4, 8, ...: dense early in
training, where vanishing shows first), at least every :data:`MAX_GAP` steps, and any other step
when recording it, at the cost its last recorded step took, keeps the probe's share of the wall
time since it was attached at most ``budget``. The forced records cost ``c * log2(steps)``: more
than the budget only in runs shorter than about ``c / (budget * t) * log2(steps)`` steps (``c``: one
recorded step's cost, ``t``: one training step).

What a recorded step costs is measured from the outside: the wall time from the end of the
probe's step hook of one step to the end of the next (a step's *interval*, :meth:`Cadence.end_step`;
a flush that follows lands in the next interval) minus the median interval of recent unrecorded steps.
That excess holds everything recording adds, also the hook dispatch that no timer inside the
probe's hooks sees (module calls taking PyTorch's slow path, autograd calling tensor hooks,
tensors kept alive), which is most of the cost of activation and delta statistics. It is never
taken below the time measured inside the probe's own code on that step. Unrecorded steps are
charged the time inside the probe's code (their hooks return at once). To have a reference,
a budgeted probe leaves the first non-forced step unrecorded and then at least one step in
:data:`REBASE`; until a reference exists recorded steps are charged when it does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from statistics import median
from typing import Any

from gradprobe.errors import GradprobeError
from gradprobe.schedules import Schedule

Clock = Callable[[], float]
MAX_GAP = 1000  # under a budget, a record at least every MAX_GAP steps, whatever it costs
REBASE = 100  # under a budget, at least one unrecorded (reference) step in every REBASE steps
BASE_WINDOW = 15  # unrecorded steps whose median interval is the reference


def _forced(step: int, last: int | None) -> bool:
    """Step 0, powers of two, and MAX_GAP steps after the last record."""
    return step & (step - 1) == 0 or last is None or step - last >= MAX_GAP


class Cadence:
    """Decides once per step whether the probe records, and accounts the time the probe costs.

    Args:
        schedule: a fixed schedule ``step -> bool``, used when ``budget`` is None.
        budget: the largest share of wall time the probe may take (e.g. 0.02), or None.
        clock: seconds as a float, e.g. ``time.perf_counter`` (tests pass a fake one).
    """

    def __init__(self, schedule: Schedule, budget: float | None, clock: Clock) -> None:
        if budget is not None and not 0 < budget < 1:
            raise GradprobeError(f"budget: {budget!r} is not a share of run time; use a float in (0, 1), e.g. 0.02")
        self.schedule, self.budget, self.clock = schedule, budget, clock
        self.spent = 0.0  # seconds charged to the probe for the steps ended so far
        self.recorded = 0
        self._start = clock()
        self._decided: dict[int, bool] = {}  # steps decided and not yet ended: recorded or not
        self._last: int | None = None  # the last recorded step
        self._last_cost = 0.0  # what the last priced recorded step was charged
        self._inside = 0.0  # seconds inside the probe's own code since it was attached
        self._opened: float | None = None  # clock when the current step's interval began
        self._inside_at_open = 0.0
        self._base: deque[float] = deque(maxlen=BASE_WINDOW)  # intervals of recent unrecorded steps
        self._base_step: int | None = None  # the newest unrecorded step timed
        self._unpriced: tuple[int, float, float] = (0, 0.0, 0.0)  # recorded steps awaiting a reference: count,
        # their intervals and their inside time (sums)

    def due(self, step: int) -> bool:
        """Whether ``step`` is recorded: decided when the step before it ended (or at the first query), then fixed."""
        if step not in self._decided:
            now = self.clock()
            if self._opened is None:  # the first step's interval begins at its first query
                self._opened, self._inside_at_open = now, self._inside
            self._decide(step, now)
        return self._decided[step]

    def _decide(self, step: int, now: float) -> None:
        due = self.schedule(step) if self.budget is None else self._affordable(step, now)
        self._decided[step] = due
        if due:
            self._last = step

    def end_step(self, since: float, step: int) -> float:
        """The probe's work for ``step`` is done: account its time from ``since``, close the step's interval,
        and decide whether the next step records. Returns the clock reading the next interval begins at.
        """
        self.spend(since)
        now = self.clock()
        if self._opened is not None:
            self._close(step, now - self._opened, self._inside - self._inside_at_open)
        self._opened, self._inside_at_open = now, self._inside
        self._decided = {s: d for s, d in self._decided.items() if s > step}
        if step + 1 not in self._decided:
            self._decide(step + 1, now)
        return now

    def _close(self, step: int, interval: float, inside: float) -> None:
        """Charge the step that ended: its probe time if unrecorded, else its excess over the reference."""
        if not self._decided.get(step, False):
            self.spent += inside
            self._base.append(interval)
            self._base_step = step
            if self._unpriced[0]:
                self._charge(*self._unpriced)
                self._unpriced = (0, 0.0, 0.0)
            return
        self.recorded += 1
        if self._base:
            self._charge(1, interval, inside)
        else:
            count, intervals, insides = self._unpriced
            self._unpriced = (count + 1, intervals + interval, insides + inside)

    def _charge(self, count: int, intervals: float, inside: float) -> None:
        """Charge ``count`` recorded steps their intervals' excess over the reference, at least their inside time."""
        cost = max(inside, intervals - count * median(self._base))
        self._last_cost = cost / count
        self.spent += cost

    def _affordable(self, step: int, now: float) -> bool:
        assert self.budget is not None
        if _forced(step, self._last):
            return True
        if self._base_step is None or step - self._base_step > REBASE:
            return False  # time an unrecorded step: the reference that recorded steps are priced against
        cost = self._last_cost
        return self.spent + cost <= self.budget * (now - self._start + cost)

    def spend(self, since: float) -> None:
        """Account time inside the probe's code from ``since`` (a reading of :attr:`clock`) to now."""
        self._inside += self.clock() - since

    def report(self, steps: int) -> dict[str, Any]:
        """``{budget, overhead, recorded_steps, steps}``: overhead is the probe's cost over wall time since attach.

        The step still open, and recorded steps that had no reference yet, count their time inside the probe.
        """
        wall = self.clock() - self._start
        pending = self._inside - self._inside_at_open + self._unpriced[2]
        return {"budget": self.budget, "overhead": (self.spent + pending) / wall if wall > 0 else 0.0,
                "recorded_steps": self.recorded, "steps": steps}


__all__ = ["BASE_WINDOW", "MAX_GAP", "REBASE", "Cadence", "Clock"]

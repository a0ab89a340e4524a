"""Module-output records of one step, held per call until the optimizer step decides which to keep.

A forward call of a recorded module leaves raw activation reductions (and a per-unit dead mask);
the tensor hook on its output adds the delta's when backward reaches it. At the step, calls whose
output received no gradient (a validation pass run with grad on, a branch the loss does not use)
are dropped, and the calls of one module in one step (a shared block, an RNN cell in a Python
loop, gradient-accumulation micro-batches) are pooled as if their outputs were concatenated
along the batch dimension: sums and counts add, ``max |x|`` takes the max, centred norms combine
with the spread of the means, and a unit is dead only if it is dead in every call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gradprobe import records as R
from gradprobe.quantities import ActivationStats, Inputs, TensorStats, merge_moments
from gradprobe.quantities.tensor_stats import LINEAR, stack_rows
from gradprobe.units import UnitMasks, pool_masks


@dataclass
class Call:
    """One forward call of a recorded module in the current step."""

    name: str
    stats: tuple[str, ...]  # activation stats of this call's module
    raw: torch.Tensor  # (k,) activation reductions without the dead count
    meta: tuple[float, ...]  # (numel, sum(shape), units)
    batch: int  # size of dim 0 (1 for outputs of dim <= 1)
    dead: torch.Tensor | None  # (units,) bool: derivative ~0 for every example of this call
    delta: torch.Tensor | None = None  # (k_delta,) delta reductions, once backward reached the output
    delta_meta: tuple[float, ...] = ()
    arrival: int = -1  # order in which backward reached the output; -1: not (yet)
    traced: bool = False  # recorded inside a torch.compile graph (see Outputs._traced)
    tap: torch.Tensor | None = None  # traced: the DeltaTap buffer backward writes the delta into
    units: UnitMasks | None = None  # per-unit dead/saturated masks (gradprobe.units), if tracked


@dataclass(frozen=True)
class Row:
    """A pooled record of one module at one step: one row of a block."""

    name: str
    stats: tuple[str, ...]
    raw: torch.Tensor  # (k,)
    meta: tuple[float, ...]
    batch: int = 1  # examples pooled (size of dim 0 over the calls), for combining across ranks
    dead: torch.Tensor | None = None  # (units,) bool: dead in every call, for combining across ranks
    units: UnitMasks | None = None  # per-unit masks AND-ed over the calls (gradprobe.units)


def _pooled_meta(metas: list[tuple[float, ...]], batches: list[int]) -> tuple[float, ...]:
    """Meta ``(numel, sum(shape), ...)`` of the concatenation along dim 0; later fields are the first call's."""
    first = metas[0]
    return (sum(m[0] for m in metas), first[1] + sum(batches[1:]), *first[2:])


class Pending:
    """The calls of the current step, and their pooling at the step (see the module docstring)."""

    def __init__(self, act_q: ActivationStats, delta_q: TensorStats) -> None:
        self._act_q, self._delta_q = act_q, delta_q
        self._calls: list[Call] = []
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: Call) -> None:
        """Hold a forward call until the step."""
        self._calls.append(call)

    def on_delta(self, call: Call, grad: torch.Tensor) -> None:
        """Backward reached ``call``'s output with gradient ``grad``: keep its delta reductions."""
        call.arrival, self._arrivals = self._arrivals, self._arrivals + 1
        if self._delta_q.stats:
            inputs = Inputs(grad)
            call.delta, call.delta_meta = self._delta_q.raw(inputs), self._delta_q.meta(inputs)

    @property
    def calls(self) -> list[Call]:
        """The calls held so far in this step."""
        return self._calls

    def read_taps(self) -> dict[str, int]:
        """Move the deltas of traced calls out of their tap buffers (one host read); traced calls per module.

        Backward order inside a compiled graph is not observed: traced calls count as reached in
        reverse forward order; a tapped call whose buffer was not written was not reached (dropped).
        """
        traced = [c for c in self._calls if c.traced]
        tapped = [c for c in traced if c.tap is not None]
        reached = torch.stack([c.tap[-1] for c in tapped]).gt(0).tolist() if tapped else []  # type: ignore[index]
        hit = dict(zip(map(id, tapped), reached))
        for order, call in enumerate(reversed(traced)):
            if hit.get(id(call), True):
                call.arrival = self._arrivals + order
            if call.tap is not None:
                call.delta = call.tap[:-1].clone() if hit[id(call)] else None
                call.tap.zero_()
        counts: dict[str, int] = {}
        for call in traced:
            counts[call.name] = counts.get(call.name, 0) + 1
        return counts

    def clear(self) -> None:
        """Drop every held call (a step the GradScaler skipped, or after a commit)."""
        self._calls, self._arrivals = [], 0

    def commit(self, scale: torch.Tensor | None) -> tuple[list[Row], list[Row]]:
        """Activation rows (forward order) and delta rows (backward order) of the calls backward reached.

        Args:
            scale: the loss scale the step's backward ran with (a GradScaler's), or None; delta
                reductions are divided by it (counts are not).
        """
        kept = [c for c in self._calls if c.arrival >= 0]
        self.clear()
        by_module: dict[str, list[Call]] = {}
        for call in kept:
            by_module.setdefault(call.name, []).append(call)
        acts = [self._activation(calls) for calls in by_module.values()]
        deltas = [self._delta(calls) for calls in sorted(by_module.values(), key=lambda cs: cs[0].arrival)
                  if all(c.delta is not None for c in calls)]
        if scale is not None and deltas:
            deltas = self._unscale(deltas, scale)
        return acts, deltas

    def _activation(self, calls: list[Call]) -> Row:
        first = calls[0]
        batches = [c.batch for c in calls]
        raw = first.raw if len(calls) == 1 else merge_moments(
            stack_rows([c.raw for c in calls]), [c.meta[0] for c in calls], self._act_q.moments)
        dead = None
        if R.DEAD_FRAC in first.stats:
            masks = [c.dead for c in calls if c.dead is not None]
            same = len(masks) == len(calls) and len({m.shape for m in masks}) == 1
            # units of differently shaped calls cannot be matched: no dead count rather than a wrong one
            dead = torch.stack(masks).all(0) if same else None
            count = dead.sum() if dead is not None else torch.tensor(float("nan"), device=raw.device)
            col = self._act_q.dead_column
            raw = torch.cat([raw[:col], count.to(raw.dtype)[None], raw[col:]])
        return Row(first.name, first.stats, raw, _pooled_meta([c.meta for c in calls], batches), sum(batches), dead,
                   pool_masks([c.units for c in calls]))

    def _delta(self, calls: list[Call]) -> Row:
        deltas = [c.delta for c in calls]
        raw = deltas[0] if len(calls) == 1 else merge_moments(
            stack_rows(deltas), [c.delta_meta[0] for c in calls], self._delta_q.moments)  # type: ignore[arg-type]
        meta = _pooled_meta([c.delta_meta for c in calls], [c.batch for c in calls])
        return Row(calls[0].name, self._delta_q.stats, raw, meta, sum(c.batch for c in calls))  # type: ignore[arg-type]

    def _unscale(self, rows: list[Row], scale: torch.Tensor) -> list[Row]:
        """Divide the linear reductions (sums, centred norm, max) of every row by ``scale`` in one op."""
        raw = stack_rows([r.raw for r in rows])  # (D, k)
        linear = torch.tensor([m in LINEAR for m in self._delta_q.moments], device=raw.device)
        raw = torch.where(linear, raw / scale.to(raw.device, raw.dtype), raw)
        return [replace(r, raw=v) for r, v in zip(rows, raw.unbind(0))]


__all__ = ["Call", "Pending", "Row"]

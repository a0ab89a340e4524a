"""Stop at the first non-finite value and name the module that produced it, not every module it passed through.

Every module boundary is checked once per checked step: each distinct tensor (module inputs and outputs in
forward, their gradients and the parameter gradients in backward) costs one device-side ``torch.aminmax``,
which is NaN-propagating and never overflows, so the check is exact (``isfinite(min) & isfinite(max)``)
and gives the min/max statistics for free; measured on CPU it is ~13x cheaper than ``isfinite(x).all()``.
The values of a step are stacked and read at the next ``optimizer.step()`` (before the weights change):
one host sync per checked step. Only when something is non-finite is the event log walked on the host:

* forward: the first module (in completion order, so inner before outer) whose inputs are all finite and
  whose output is not; if none, the non-finite value came in with the data.
* backward: the first non-finite gradient in backward order; the module that read that tensor in forward
  (or owns that parameter) produced it from finite output gradients. If no module read it, the parent of
  its producer did (an op in the parent's ``forward``), or, at the model output, the loss.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterator
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gradprobe.errors import GradprobeError

Phase = Literal["forward", "backward"]
Source = Literal["module", "data", "loss"]
_MAX_CHECKS = 8192  # flush (sync) early when no optimizer step comes, e.g. a long evaluation loop


class TensorStats(NamedTuple):
    """Min, max and shape of one checked tensor (NaN when it holds a NaN)."""

    min: float
    max: float
    shape: tuple[int, ...]


class NonFiniteError(GradprobeError):
    """The first non-finite value: which module produced it, at which step, in which phase, from which inputs."""

    def __init__(self, message: str, module: str | None, step: int, phase: Phase, source: Source,
                 input_stats: tuple[TensorStats, ...]) -> None:
        super().__init__(message)
        self.module, self.step, self.phase, self.source, self.input_stats = module, step, phase, source, input_stats


class NonFiniteWarning(UserWarning):
    """``nan_guard(..., action="warn")``: the message of the :class:`NonFiniteError` it would have raised."""


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Floating-point tensors in a module's inputs or output (tuples, lists and dicts are searched)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class nan_guard:  # noqa: N801  (used like a function: ``with gradprobe.nan_guard(model):``)
    """Context manager: raise (or warn) at the first non-finite value, naming the module that produced it.

    Args:
        model: the module to guard; every submodule is checked.
        optimizer: count only this optimizer's steps; None counts every optimizer's ``step()``.
        action: ``"raise"`` a :class:`NonFiniteError` from ``optimizer.step()`` before the weights change,
            or ``"warn"`` (:class:`NonFiniteWarning`) once and let training continue.
        every: check steps ``0, every, 2 * every, ...``; exact on the steps it checks.

    Raises:
        GradprobeError: on a bad argument (at construction).
        NonFiniteError: on the first non-finite value, with ``action="raise"``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 action: Literal["raise", "warn"] = "raise", every: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise GradprobeError(f"nan_guard: model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise GradprobeError(f"nan_guard: optimizer must be a torch.optim.Optimizer or None, "
                                 f"got {type(optimizer).__name__}")
        if action not in ("raise", "warn"):
            raise GradprobeError(f"nan_guard: action={action!r}; allowed: 'raise' or 'warn'")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise GradprobeError(f"nan_guard: every={every!r}; allowed: an int >= 1")
        self.model, self.optimizer, self.action, self.every = model, optimizer, action, every
        self.step = 0  # optimizer steps completed since entering
        self.error: NonFiniteError | None = None  # the first finding (also kept with action="warn")
        self._handles: list[Any] = []
        self._names = {m: n for n, m in model.named_modules()}
        self._params = [(n, p) for m, n in self._names.items() for p in m.parameters(recurse=False)]
        self._reset()

    # -- attach / detach ------------------------------------------------------------------------------
    def __enter__(self) -> nan_guard:
        """Register the hooks."""
        for module, name in self._names.items():
            self._handles.append(module.register_forward_hook(partial(self._on_forward, name)))
        if self.optimizer is None:
            self._handles.append(register_optimizer_step_pre_hook(lambda opt, a, k: self._sync()))
            self._handles.append(register_optimizer_step_post_hook(lambda opt, a, k: self._advance()))
        else:
            self._handles.append(self.optimizer.register_step_pre_hook(lambda opt, a, k: self._sync()))
            self._handles.append(self.optimizer.register_step_post_hook(lambda opt, a, k: self._advance()))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Check what the last (partial) step left, unless an exception is already on its way; unhook."""
        try:
            if exc_type is None and self._events:  # a step that never reached optimizer.step()
                self._sync()
        finally:
            while self._handles:
                self._handles.pop().remove()
            self._reset()

    # -- device side: one reduction per distinct tensor ------------------------------------------------
    def _reset(self) -> None:
        self._values: list[torch.Tensor] = []  # 2 per check: min, max
        self._shapes: list[tuple[int, ...]] = []  # per check
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, int]] = {}  # id -> (ref, version, check)
        self._events: list[tuple[Any, ...]] = []  # ("call", name, ins, outs) | ("grad", check, tensor_check, owner)

    def _checking(self) -> bool:
        return self.error is None and self.step % self.every == 0 and bool(self._handles)

    def _check(self, t: torch.Tensor) -> int:
        """Queue min and max of ``t`` on its device; returns the check's index."""
        mn, mx = torch.aminmax(t.detach() if t.dtype is torch.float32 else t.detach().float())
        self._values += (mn, mx)
        self._shapes.append(t.shape)
        return len(self._shapes) - 1

    def _slot(self, t: torch.Tensor) -> int:
        """Check index of a forward tensor, checked once per version (in-place ops make a new version)."""
        seen = self._seen.get(id(t))
        if seen is not None and seen[0]() is t and seen[1] == t._version:
            return seen[2]
        if t.numel() == 0:
            return -1
        index = self._check(t)
        self._seen[id(t)] = (weakref.ref(t), t._version, index)
        if t.requires_grad:
            t.register_hook(partial(self._on_grad, index))
        return index

    def _on_forward(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if not self._checking():
            return
        ins = tuple(i for i in map(self._slot, _tensors(args)) if i >= 0)
        outs = tuple(i for i in map(self._slot, _tensors(output)) if i >= 0)
        self._events.append(("call", name, ins, outs))
        if len(self._shapes) > _MAX_CHECKS:
            self._sync()

    def _on_grad(self, tensor_check: int, grad: torch.Tensor) -> None:
        if self._checking() and grad.numel():
            self._events.append(("grad", self._check(grad), tensor_check, None))

    # -- host side: one sync per checked step, the event walk only on failure --------------------------
    def _advance(self) -> None:
        self.step += 1

    def _sync(self) -> None:
        """Read the queued checks (the step's one host sync); on a non-finite value, name its producer.

        Parameter gradients are checked here, batched (``_foreach_norm``), not by per-parameter hooks;
        a norm can overflow on finite values, so a non-finite one is re-checked exactly before blaming.
        """
        if not self._checking():
            self._reset()
            return
        grads = [(n, p.grad) for n, p in self._params if p.grad is not None and not p.grad.is_sparse]
        parts = [torch.stack(self._values)] if self._values else []  # (2 * checks,)
        if grads:
            norms = torch._foreach_norm([g for _, g in grads])
            parts.append(torch.stack([n.float() for n in norms]) if len({n.dtype for n in norms}) > 1
                         else torch.stack(norms).float())
        if not parts or bool(torch.isfinite(torch.cat([q.to(parts[0].device) for q in parts])).all()):
            self._reset()
            return
        values = parts[0].double().view(-1, 2).tolist() if self._values else []
        stats = [TensorStats(v[0], v[1], tuple(s)) for v, s in zip(values, self._shapes)]
        bad_owners = {n for n, g in grads if not bool(torch.isfinite(g).all())}
        error = _locate(self._events, stats, self.step, bad_owners)
        self._reset()
        if error is None:  # a gradient norm overflowed on finite values
            return
        self.error = error
        if self.action == "raise":
            raise error
        warnings.warn(str(error), NonFiniteWarning, stacklevel=2)


def _bad(stats: list[TensorStats], index: int) -> bool:
    return not (math.isfinite(stats[index].min) and math.isfinite(stats[index].max))


def _locate(events: list[tuple[Any, ...]], stats: list[TensorStats], step: int,
            bad_owners: set[str]) -> NonFiniteError | None:
    """Walk the event log from the first non-finite check to the module that produced it."""
    first = next((i for i, e in enumerate(events) if any(_bad(stats, c) for c in _event_checks(e))), len(events))
    calls = [e for e in events[:first] if e[0] == "call"]
    param_culprit = _param_culprit(events[:first], bad_owners)
    if param_culprit is not None or first == len(events):
        if param_culprit is None:
            return None
        owner, out_checks = param_culprit
        return _error(owner, "module", step, "backward", tuple(stats[c] for c in out_checks))
    event = events[first]
    if event[0] == "call":
        for _, name, ins, outs in (e for e in events[first:] if e[0] == "call"):
            if any(_bad(stats, c) for c in outs) and not any(_bad(stats, c) for c in ins):
                return _error(name, "module", step, "forward", tuple(stats[c] for c in ins))
        bad_in = next(c for c in event[2] if _bad(stats, c))
        return _error(event[1], "data", step, "forward", (stats[bad_in],))
    _, check, tensor_check, owner = event
    if owner is None:
        readers = [e for e in calls if tensor_check in e[2]]
        if readers:
            owner = readers[0][1]  # innermost: it completed first
        else:
            writers = [e[1] for e in calls if tensor_check in e[3]]
            outer = min(writers, key=lambda n: n.count(".") if n else -1)
            if outer == "":
                return _error(None, "loss", step, "backward", (stats[check],))
            owner = outer.rpartition(".")[0]
    outs = {c for e in calls if e[1] == owner for c in e[3]}
    grads_out = tuple(stats[e[1]] for e in events[:first] if e[0] == "grad" and e[2] in outs)
    return _error(owner, "module", step, "backward", grads_out)


def _param_culprit(before: list[tuple[Any, ...]], bad_owners: set[str]) -> tuple[str, list[int]] | None:
    """The owner of a non-finite parameter gradient whose output gradients had all arrived finite, earliest first.

    Parameter gradients carry no time stamp; a module's backward runs right after its output gradients
    arrive, so it is dated by its first output-gradient event, and it must precede the first bad event.
    """
    outs = {c: e[1] for e in before if e[0] == "call" and e[1] in bad_owners for c in e[3]}
    for event in before:
        if event[0] == "grad" and event[2] in outs:
            owner = outs[event[2]]
            slots = {c for c, o in outs.items() if o == owner}
            return owner, [e[1] for e in before if e[0] == "grad" and e[2] in slots]
    return None


def _event_checks(event: tuple[Any, ...]) -> tuple[int, ...]:
    return (*event[2], *event[3]) if event[0] == "call" else (event[1],)


def _describe(stats: tuple[TensorStats, ...]) -> str:
    return ", ".join(f"{tuple(s.shape)} min {s.min:.4g} max {s.max:.4g}" for s in stats) or "none recorded"


def _error(module: str | None, source: Source, step: int, phase: Phase,
           stats: tuple[TensorStats, ...]) -> NonFiniteError:
    """The one-line message: what, where, from which inputs, and what to look at."""
    where = f"at step {step} ({phase})"
    if source == "data":
        msg = (f"non-finite input data {where}: it entered the model at {module!r} ({_describe(stats)}), "
               f"no module produced it; clean or check the batch")
        return NonFiniteError(msg, None, step, phase, source, stats)
    if source == "loss":
        msg = (f"non-finite gradient {where} arrives at the model output from the loss ({_describe(stats)}); "
               f"check the loss function (log of 0, division by 0) and its targets")
        return NonFiniteError(msg, None, step, phase, source, stats)
    label = repr(module) if module else "the model itself"
    if phase == "forward":
        msg = (f"{label} produced a non-finite output {where} from finite inputs [{_describe(stats)}]; "
               f"look in its forward for log/sqrt/pow of negatives, division by 0, exp overflow or non-finite weights")
    else:
        msg = (f"{label} produced a non-finite input gradient {where} from finite output gradients "
               f"[{_describe(stats)}]; look in its forward for sqrt/log/pow/division at 0 (clamp or add an eps)")
    return NonFiniteError(msg, module, step, phase, source, stats)


__all__ = ["NonFiniteError", "NonFiniteWarning", "TensorStats", "nan_guard"]

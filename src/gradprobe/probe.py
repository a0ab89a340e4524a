"""Probe: attach to any ``nn.Module`` and record per-layer gradient, weight, activation and delta statistics.

Statistics are computed on the model's device when they are due and kept
there; ``flush`` moves everything buffered to the host in one transfer per
device, so recording never forces a host-device sync on every step.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.blocks import Block, Buffer, first_nonfinite, hist_frame, stats_frame
from gradprobe.errors import GradprobeError
from gradprobe.hooks import HookSet, first_tensor
from gradprobe.pending import Call, Pending, stack_rows
from gradprobe.quantities import (
    ActivationStats,
    Inputs,
    Quantity,
    StepStats,
    TensorStats,
    UpdateRatio,
    family_of,
    histogram,
    step_row,
    update_norms,
)
from gradprobe.schedules import Schedule, as_schedule
from gradprobe.structure import Capture, analyse

log = logging.getLogger(__name__)
Sink = Callable[[pd.DataFrame, pd.DataFrame], None]


@dataclass(frozen=True)
class ProbeOptions:
    """What the probe records beyond its cadence; the defaults are cheap enough to leave on."""

    grad_stats: tuple[str, ...] = R.DEFAULT_GRAD_STATS
    weight_stats: tuple[str, ...] = R.DEFAULT_WEIGHT_STATS  # update_ratio needs a weight snapshot per step
    activation_stats: tuple[str, ...] = R.DEFAULT_ACTIVATION_STATS + (R.NONFINITE,)
    delta_stats: tuple[str, ...] = R.DEFAULT_DELTA_STATS + (R.NONFINITE,)
    bins: int = 30  # histogram bins; edges span each tensor's finite range
    saturation_tol: float = 0.01  # "saturated" = within this fraction of the range from an asymptote
    flush_every: int = 64  # recorded steps buffered on the device before one transfer to the host
    structure: bool = True  # read residual joins, norms and tied weights from the first training pass (once)


def _split(name: str) -> tuple[str, str]:
    layer, _, tensor = name.rpartition(".")
    return layer, tensor


def _select(names: Sequence[str], patterns: str | Sequence[str] | None, what: str) -> list[str]:
    if patterns is None:
        return list(names)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not chosen:
        sample = ", ".join(list(names)[:6]) or "(none)"
        raise GradprobeError(f"{what}: {pats!r} matches nothing; available names include {sample}")
    return chosen


class Probe:
    """Records per-layer statistics of ``model`` while it trains; a context manager; ``detach()`` undoes it.

    Args:
        model: any ``nn.Module``; its behaviour is not changed.
        optimizer: read gradients at this optimizer's step time (after accumulation, unscaling and
            clipping) and measure the update it really took. If None, the probe follows every torch
            optimizer that holds the model's parameters; loops without one call :meth:`step`.
        every: record cadence in optimizer steps (an int or a schedule ``step -> bool``).
        hist_every: histogram cadence; None for no histograms.
        params: fnmatch patterns of parameter names to record (default: all trainable).
        modules: fnmatch patterns of module names whose outputs (activation, delta) are recorded
            (default: every leaf module); ``[]`` records none.
        options: stats, bins and buffering (:class:`ProbeOptions`).
        sink: called with ``(stats_frame, hist_frame)`` at every flush, e.g. a run store writer.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop, or None. Deltas are then
            divided by the loss scale their backward ran with, a step the scaler skipped (inf/NaN
            gradients, no update) keeps no activation or delta records, and every recorded or
            skipped step gets a kind-``step`` row pair (``skipped``, ``loss_scale``).

    Module outputs (activation and delta) are recorded in train and eval mode alike, for every
    forward pass whose output backward reaches before the optimizer step; passes without grad, and
    passes with grad whose outputs receive no gradient (e.g. validation), are not. All such passes
    of one step are pooled: a module called twice (a shared block, an RNN cell in a loop) or once
    per micro-batch of gradient accumulation gets the statistics of its outputs concatenated along
    the batch, and a unit is dead only if it is dead in every call (see :mod:`gradprobe.pending`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | Schedule = 1,
        hist_every: int | Schedule | None = None,
        params: str | Sequence[str] | None = None,
        modules: str | Sequence[str] | None = None,
        options: ProbeOptions | None = None,
        sink: Sink | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradprobeError(f"model: {type(model).__name__} is not a torch.nn.Module")
        self.model = model
        self.options = options or ProbeOptions()
        if self.options.bins < 1 or self.options.flush_every < 1:
            raise GradprobeError("options: bins and flush_every must be >= 1")
        self._schedule = as_schedule(every)
        self._hist_schedule = as_schedule(hist_every)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._params = [(n, named[n]) for n in _select(list(named), params, "params")]
        self._grad_q = TensorStats(R.GRAD, self.options.grad_stats)
        weight_plain = tuple(s for s in self.options.weight_stats if s != R.UPDATE_RATIO)
        self._weight_q = TensorStats(R.WEIGHT, weight_plain)
        self._ratio_q = UpdateRatio((R.UPDATE_RATIO,)) if R.UPDATE_RATIO in self.options.weight_stats else None
        self._act_q = ActivationStats(self.options.activation_stats, self.options.saturation_tol)
        self._delta_q = TensorStats(R.DELTA, self.options.delta_stats)
        if optimizer is not None and not self._owns(optimizer):
            raise GradprobeError("optimizer: it holds none of the model's parameters")
        self._explicit_optimizer = optimizer
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise GradprobeError(f"scaler: {type(scaler).__name__} is not a torch.amp.GradScaler; pass one or None")
        self._scaler = scaler
        self._step_q = StepStats(R.STEP_STATS)
        self._pending = Pending(self._act_q, self._delta_q)
        self._stepped = False  # an optimizer step (or step()) ran since the scaler's last update()
        self._owned: dict[int, bool] = {}
        self._step = 0
        self._snapshot: list[torch.Tensor] | None = None
        self._snapshot_buffers: list[torch.Tensor] | None = None
        self._last_weights: list[torch.Tensor] | None = None  # for step(): ratio between recorded steps
        self._followed_optimizer = False
        self._buffer = Buffer()
        self._frames: list[pd.DataFrame] = []
        self._hist_frames: list[pd.DataFrame] = []
        self._sink = sink
        self.first_nonfinite: dict[str, Any] | None = None
        self.structure: dict[str, Any] | None = None  # the model's wiring, for the residual-aware diagnosis
        self._hooks = HookSet()
        self._structure_hooks = HookSet()
        self._capture = Capture()
        self._attach(model, modules)

    # -- attaching -------------------------------------------------------------------------------
    def _attach(self, model: nn.Module, modules: str | Sequence[str] | None) -> None:
        leaves = [n for n, m in model.named_modules() if not list(m.children())]
        chosen = [] if modules is not None and not modules else _select(leaves, modules, "modules")
        by_name = dict(model.named_modules())
        for name in chosen:
            self._hooks.forward(by_name[name], self._forward_hook(name, family_of(by_name[name])))
        self._hooks.optimizer(self._explicit_optimizer, self._pre_step, self._post_step)
        if self._scaler is not None:
            self._hooks.scaler_update(self._scaler, self._before_update)
        if self.options.structure:
            for name in leaves:
                self._structure_hooks.forward(by_name[name], self._capture.hook(name))
            self._structure_hooks.forward(model, self._read_structure)
        self._attached = True

    def _read_structure(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """At the end of the first forward pass with grad, read the model's wiring from its autograd graph, once."""
        out = first_tensor(output)
        if not torch.is_grad_enabled() or out is None or out.grad_fn is None:
            self._capture.clear()  # nothing to read from this pass: wait for a training one
            return
        try:
            self.structure = analyse(self.model, self._capture, out)
        except Exception as exc:  # noqa: BLE001  (the wiring only refines the diagnosis: never stop training)
            log.warning("model structure not read (%s); the diagnosis uses the plain gradient-flow rule", exc)
        finally:
            self._structure_hooks.remove_all()
            self._capture.clear()

    def detach(self) -> None:
        """Remove every hook and move what is buffered to the host; safe to call twice."""
        if getattr(self, "_attached", False):
            self._hooks.remove_all()
            self._structure_hooks.remove_all()
            self._attached = False
            self.flush()

    def __enter__(self) -> Probe:  # noqa: PYI034  (Probe is not meant to be subclassed)
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def step_count(self) -> int:
        """Number of optimizer steps seen so far (the step the next records belong to)."""
        return self._step

    # -- recording -------------------------------------------------------------------------------
    def _owns(self, optimizer: torch.optim.Optimizer) -> bool:
        ids = {id(p) for _, p in self._params}
        return any(id(p) in ids for g in optimizer.param_groups for p in g["params"])

    def _follows(self, optimizer: torch.optim.Optimizer) -> bool:
        key = id(optimizer)
        if key not in self._owned:
            self._owned[key] = self._explicit_optimizer is not None or self._owns(optimizer)
        return self._owned[key]

    def _push(self, step: int, quantity: Quantity, names: list[tuple[str, str]], stats: tuple[str, ...],
              raw: torch.Tensor, meta: list[tuple[float, ...]]) -> None:
        if names and stats:
            self._buffer.blocks.append(Block(step, quantity, names, stats, raw, meta))
            self._buffer.steps.add(step)

    def resume_at(self, step: int) -> None:
        """Continue counting from ``step`` (a run restored from a checkpoint), so records keep their steps."""
        self._step = step

    def _record_tensors(self, step: int, quantity: TensorStats, values: list[tuple[str, torch.Tensor]]) -> None:
        if not values or not quantity.stats:
            return
        inputs = [Inputs(t) for _, t in values]
        raw = stack_rows([quantity.raw(i) for i in inputs])  # (len(values), k)
        self._push(step, quantity, [_split(n) for n, _ in values], quantity.stats, raw,
                   [quantity.meta(i) for i in inputs])

    def _record_params(self, step: int) -> None:
        grads = [(n, p.grad) for n, p in self._params if p.grad is not None]
        self._record_tensors(step, self._grad_q, grads)
        self._record_tensors(step, self._weight_q, [(n, p) for n, p in self._params])

    def _record_hists(self, step: int) -> None:
        for n, p in self._params:
            layer, tensor = _split(n)
            for kind, value in ((R.GRAD, p.grad), (R.WEIGHT, p)):
                if value is not None:
                    self._buffer.hists.append((step, layer, tensor, kind, histogram(value, self.options.bins)))

    def _record_ratio(self, step: int, before: list[torch.Tensor]) -> None:
        assert self._ratio_q is not None
        raw = update_norms(before, [p for _, p in self._params])  # (n_params, 2)
        self._push(step, self._ratio_q, [_split(n) for n, _ in self._params], (R.UPDATE_RATIO,), raw,
                   [()] * len(self._params))

    def _snapshot_weights(self, buffers: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Copy the weights into reusable buffers (allocated once) in one fused call."""
        params = [p.detach() for _, p in self._params]
        if buffers is None:
            return [p.clone() for p in params]
        torch._foreach_copy_(buffers, params)
        return buffers

    def _pre_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._follows(optimizer):
            return
        self._followed_optimizer = True
        step = self._step
        if self._schedule(step):
            self._record_step(step, skipped=False)
            self._commit(step)
            self._record_params(step)
            if self._ratio_q is not None:
                self._snapshot = self._snapshot_weights(self._snapshot_buffers)
                self._snapshot_buffers = self._snapshot
        if self._hist_schedule(step):
            self._record_hists(step)

    def _post_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._follows(optimizer):
            return
        if self._snapshot is not None:
            self._record_ratio(self._step, self._snapshot)
            self._snapshot = None
        self._advance()

    def _advance(self) -> None:
        self._step += 1
        self._stepped = True
        self._pending.clear()
        if len(self._buffer.steps) >= self.options.flush_every:
            self.flush()

    def step(self) -> None:
        """Record (if due) and advance one step, for loops that update weights without a torch optimizer.

        The update ratio is then measured between consecutive recorded steps.

        Raises:
            GradprobeError: if the probe already follows a torch optimizer's steps.
        """
        if self._followed_optimizer:
            raise GradprobeError("probe.step(): the probe already follows the optimizer's steps; don't call both")
        step = self._step
        if self._schedule(step):
            self._record_step(step, skipped=False)
            self._commit(step)
            self._record_params(step)
            if self._ratio_q is not None:
                if self._last_weights is not None:
                    self._record_ratio(step, self._last_weights)
                self._last_weights = self._snapshot_weights(None)
        if self._hist_schedule(step):
            self._record_hists(step)
        self._advance()

    def _loss_scale(self) -> torch.Tensor | None:
        """The scaler's current scale (a device tensor: no sync), None without an enabled scaler."""
        if self._scaler is None or not self._scaler.is_enabled():
            return None
        return self._scaler._get_scale_async()

    def _record_step(self, step: int, skipped: bool) -> None:
        if self._scaler is not None:
            self._push(step, self._step_q, [("", R.STEP_TENSOR)], self._step_q.stats,
                       step_row(skipped, self._loss_scale())[None], [()])

    def _before_update(self) -> None:
        """Called before ``scaler.update()``: if no optimizer step ran since the last one, the scaler skipped it."""
        if not self._stepped:
            self._record_step(self._step, skipped=True)  # the scale the skipped backward overflowed with
            self._advance()  # drops the skipped step's held calls: scaled by an overflowing scale
        self._stepped = False

    def record_weights(self) -> None:
        """Record weight statistics now, at the current step (e.g. the final weights after training)."""
        self._record_tensors(self._step, self._weight_q, [(n, p) for n, p in self._params])

    def _forward_hook(self, name: str, family: object) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # Any mode (eval() with frozen BatchNorm trains too); passes without grad are not training.
            if not torch.is_grad_enabled() or not self._schedule(self._step):
                return
            out = first_tensor(output)
            if out is None or not out.is_floating_point() or out.numel() == 0 or not out.requires_grad:
                return  # no gradient can reach this output, so no optimizer step uses this pass
            data = Inputs(out, family=family, source=first_tensor(inputs))
            call = Call(name, self._act_q.stats_for(data), self._act_q.raw(data), self._act_q.meta(data),
                        out.shape[0] if out.dim() > 1 else 1, self._act_q.dead_mask(data))
            self._pending.add(call)
            # A tensor hook, not a full backward hook: it survives in-place ops after this module.
            out.register_hook(lambda g: self._pending.on_delta(call, g) if self._attached else None)

        return hook

    def _commit(self, step: int) -> None:
        """Pool the step's held module-output calls and buffer them (activations, then deltas)."""
        acts, deltas = self._pending.commit(self._loss_scale())
        for quantity, rows in ((self._act_q, acts), (self._delta_q, deltas)):
            for row in rows:
                self._push(step, quantity, [(row.name, "output")], row.stats, row.raw[None], [row.meta])

    def diagnose(self, thresholds: Any = None) -> Any:
        """The diagnosis of what was recorded so far (see :func:`gradprobe.diagnose.engine.diagnose`)."""
        from gradprobe.diagnose.engine import diagnose

        return diagnose(self, thresholds)

    # -- results ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Move everything buffered to the host (one transfer per device) and hand it to the sink."""
        blocks, hists = self._buffer.blocks, self._buffer.hists
        self._buffer = Buffer()
        if not blocks and not hists:
            return
        stats = stats_frame(blocks)
        hist = hist_frame(hists, self.options.bins)
        self._note_nonfinite(stats)
        self._frames.append(stats)
        self._hist_frames.append(hist)
        if self._sink is not None:
            self._sink(stats, hist)

    def _note_nonfinite(self, frame: pd.DataFrame) -> None:
        if self.first_nonfinite is None:
            self.first_nonfinite = first_nonfinite(frame)

    def frame(self) -> pd.DataFrame:
        """All statistics recorded so far as a tidy frame with columns :data:`records.STAT_COLUMNS`."""
        self.flush()
        if not self._frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(R.STAT_COLUMNS, (
                "int64", "object", "object", "object", "object", "float64"))})
        return pd.concat(self._frames, ignore_index=True)

    def hists(self) -> pd.DataFrame:
        """All histograms recorded so far, columns :data:`records.HIST_COLUMNS` (edges, counts as arrays)."""
        self.flush()
        if not self._hist_frames:
            return pd.DataFrame(columns=list(R.HIST_COLUMNS))
        return pd.concat(self._hist_frames, ignore_index=True)


__all__ = ["Probe", "ProbeOptions", "Sink", "first_nonfinite"]

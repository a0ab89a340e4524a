"""Probe: attach to any ``nn.Module`` and record per-layer gradient, weight, activation and delta statistics.

Statistics are computed on the model's device when they are due and kept
there; ``flush`` moves everything buffered to the host in one transfer per
device, so recording never forces a host-device sync on every step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from gradprobe import distributed
from gradprobe import records as R
from gradprobe.alerts import Alert, AlertCallback, AlertMonitor, dispatch
from gradprobe.blocks import EXAMPLES, Block, Records, Sink, first_nonfinite
from gradprobe.budget import Cadence, Clock
from gradprobe.errors import GradprobeError
from gradprobe.hooks import HookSet, first_tensor
from gradprobe.nan_guard import NonFiniteError
from gradprobe.nan_guard import nan_guard as NanGuard
from gradprobe.outputs import Outputs
from gradprobe.params import Params
from gradprobe.probe_options import ProbeOptions, select, split_name
from gradprobe.quantities import ActivationStats, StepStats, TensorStats, family_of, step_row
from gradprobe.quantities.curvature import LossFn
from gradprobe.quantities.step_stats import OverflowStats, last_nonfinite
from gradprobe.schedules import Schedule, as_schedule
from gradprobe.second_order import SecondOrder
from gradprobe.structure import Capture, analyse
from gradprobe.units import UnitTracker

if TYPE_CHECKING:
    from gradprobe.diagnose.thresholds import Thresholds

log = logging.getLogger(__name__)
DRIVES = ("optimizer", "manual")  # who says when a step's gradients are final: the optimizer's hooks or the caller


class Probe:
    """Records per-layer statistics of ``model`` while it trains; a context manager; ``detach()`` undoes it.

    Args:
        model: any ``nn.Module``; its behaviour is not changed.
        optimizer: read gradients at this optimizer's step time (after accumulation, unscaling and
            clipping) and measure the update it really took. If None, the probe follows every torch
            optimizer that holds the model's parameters; loops without one call :meth:`step`.
        every: record cadence in optimizer steps (an int or a schedule ``step -> bool``).
        budget: instead of ``every``, the largest share of wall time the probe may take (e.g. 0.02,
            what :func:`gradprobe.watch` uses): the probe times itself and records step 0, every
            power of two, at least every :data:`gradprobe.budget.MAX_GAP` steps, and other steps
            while its measured overhead stays under the budget (see :mod:`gradprobe.budget`).
        clock: the clock the probe times itself with (seconds; inject a fake one in tests).
        hist_every: histogram cadence; None for no histograms.
        params: fnmatch patterns of parameter names to record (default: all trainable).
        modules: fnmatch patterns of module names whose outputs (activation, delta) are recorded
            (default: every leaf module); ``[]`` records none.
        options: stats, bins and buffering (:class:`ProbeOptions`).
        sink: called with ``(stats_frame, hist_frame)`` at every flush, e.g. a run store writer.
        drive: ``"optimizer"`` (default): the probe hooks the optimizer's step; ``"manual"``: no
            optimizer hooks, the caller says when gradients are final (:meth:`before_update`) and
            when the update was applied (:meth:`after_update`): what trainer callbacks use, since
            Lightning runs forward and backward inside ``optimizer.step(closure)``.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop, or None. Deltas are then
            divided by the loss scale their backward ran with, a step the scaler skipped (inf/NaN
            gradients, no update) keeps no activation or delta records, and every recorded or
            skipped step gets a kind-``step`` row pair (``skipped``, ``loss_scale``).
        on_alert: called with each live :class:`~gradprobe.alerts.Alert` (a layer's verdict appeared or
            changed, judged at every flush on the last recorded steps; see :mod:`gradprobe.alerts`); it may
            raise :class:`~gradprobe.alerts.StopTraining` to stop the loop. None: a ``GradprobeAlert`` warning.
            Every alert is also logged (logger ``gradprobe.alerts``, INFO) and kept in :attr:`alerts`.
        alerts: False turns live alerts off (no evaluation, no warning); a ``Thresholds`` sets their limits.
        nan_guard: also run :class:`gradprobe.nan_guard` (``check="outputs"``, ``action="warn"``) on
            every step: its first finding, the module that produced the first NaN/Inf, is
            :attr:`nan_culprit` (training goes on; the guard's cost is measured in benchmarks/).
        sharpness_every: cadence of the top Hessian eigenvalue (kind ``curvature``), None: never;
            computed by :meth:`second_order` (see :mod:`gradprobe.second_order`).
        snr_every: cadence of the per-parameter gradient SNR (kind ``snr``), None: never.

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
        budget: float | None = None,
        clock: Clock = time.perf_counter,
        drive: str = "optimizer",
        on_alert: AlertCallback | None = None,
        alerts: bool | Thresholds = True,
        nan_guard: bool = False,
        sharpness_every: int | Schedule | None = None,
        snr_every: int | Schedule | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradprobeError(f"model: {type(model).__name__} is not a torch.nn.Module")
        model = distributed.unwrap(model)  # a DDP-wrapped model records under its module's names
        self.model = model
        self._world = distributed.current_world()
        self.options = options or ProbeOptions()
        if self.options.bins < 1 or self.options.flush_every < 1:
            raise GradprobeError("options: bins and flush_every must be >= 1")
        if budget is not None and every != 1:
            raise GradprobeError(f"every={every!r} and budget={budget!r}: pass one cadence, not both")
        self._cadence = Cadence(as_schedule(every), budget, clock)
        self._hist_schedule = as_schedule(hist_every)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        chosen = [(n, named[n]) for n in select(list(named), params, "params")]
        self._params = Params(chosen, self.options, distributed.check_params(chosen, self._world))
        distributed.check_cadence(self._world, budget, hist_every, self._params.sharded)
        if optimizer is not None and not self._owns(optimizer):
            raise GradprobeError("optimizer: it holds none of the model's parameters")
        self._explicit_optimizer = optimizer
        if drive not in DRIVES:
            raise GradprobeError(f"drive: {drive!r} is not allowed; use one of {', '.join(DRIVES)}")
        if drive == "manual" and optimizer is not None:
            raise GradprobeError("drive: 'manual' takes no optimizer; call before_update()/after_update() instead")
        self._drive = drive
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise GradprobeError(f"scaler: {type(scaler).__name__} is not a torch.amp.GradScaler; pass one or None")
        self._scaler = scaler
        self._step_q = StepStats(R.STEP_STATS)
        self._overflow_q = OverflowStats((R.FIRST_NONFINITE_GRAD,))
        self._outputs = Outputs(ActivationStats(self.options.activation_stats, self.options.saturation_tol),
                                TensorStats(R.DELTA, self.options.delta_stats), self._cadence,
                                lambda: (self._step, self._attached))
        self._units = UnitTracker(self.options.unit_dim) if self.options.units else None
        self._outputs.unit_dim = self.options.unit_dim if self.options.units else None
        self._stepped = False  # an optimizer step (or step()) ran since the scaler's last update()
        self._owned: dict[int, bool] = {}
        self._step = 0
        self._snapshot: list[torch.Tensor] | None = None
        self._last_weights: list[torch.Tensor] | None = None  # for step(): ratio between recorded steps
        self._followed_optimizer = False
        self._records = Records(self.options.bins, sink, self._world)
        self.alerts: list[Alert] = []  # live alerts so far, in the order they were raised
        self._on_alert = on_alert
        self._monitor = None if alerts is False else AlertMonitor(
            [n for n, p in model.named_parameters() if p.dim() >= 2], None if alerts is True else alerts)
        self.first_nonfinite: dict[str, Any] | None = None
        self.structure: dict[str, Any] | None = None  # the model's wiring, for the residual-aware diagnosis
        self._hooks = HookSet()
        self._structure_hooks = HookSet()
        self._capture = Capture()
        self._attach(model, modules)
        self._outputs.advance()  # whether compiled forwards record step 0
        self._guard = NanGuard(model, action="warn").attach(hook_optimizer=False) if nan_guard else None
        self._second_order = SecondOrder(sharpness_every, snr_every, self._params.named, self.options.sharpness_iters,
                                         self.options.sharpness_tol, self.options.snr_examples)

    # -- attaching -------------------------------------------------------------------------------
    def _attach(self, model: nn.Module, modules: str | Sequence[str] | None) -> None:
        leaves = [n for n, m in model.named_modules() if not list(m.children())]
        chosen = [] if modules is not None and not modules else select(leaves, modules, "modules")
        by_name = dict(model.named_modules())
        for name in chosen:
            self._hooks.forward(by_name[name], self._outputs.hook(name, family_of(by_name[name]), by_name[name]), True)
        if self._drive == "optimizer":
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
            if self._guard is not None:
                self._guard.detach(check=False)
            self._attached = False
            self.flush()

    def __enter__(self) -> Probe:  # noqa: PYI034  (Probe is not meant to be subclassed)
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def cost(self) -> dict[str, Any]:
        """``{budget, overhead, recorded_steps, steps}``: the probe's cost over wall time since it was attached.

        A recorded step costs its wall time beyond an unrecorded step's, hook dispatch included
        (see :mod:`gradprobe.budget`).
        """
        return self._cadence.report(self._step)

    @property
    def due(self) -> bool:
        """Whether the current step records (decided once per step), so callers may skip feeding hooks when not."""
        return self._cadence.due(self._step)

    @property
    def step_count(self) -> int:
        """Number of optimizer steps seen so far (the step the next records belong to)."""
        return self._step

    # -- recording -------------------------------------------------------------------------------
    def _owns(self, optimizer: torch.optim.Optimizer) -> bool:
        ids = {id(p) for _, p in self._params.named}
        return any(id(p) in ids for g in optimizer.param_groups for p in g["params"])

    def _follows(self, optimizer: torch.optim.Optimizer) -> bool:
        key = id(optimizer)
        if key not in self._owned:
            self._owned[key] = self._explicit_optimizer is not None or self._owns(optimizer)
        return self._owned[key]

    def resume_at(self, step: int) -> None:
        """Continue counting from ``step`` (a run restored from a checkpoint), so records keep their steps."""
        self._step = step
        self._outputs.advance()
        if self._guard is not None:
            self._guard.step = step

    @property
    def nan_culprit(self) -> NonFiniteError | None:
        """With ``nan_guard=True``: the first non-finite value's producer (module, step, phase, inputs), else None."""
        return self._guard.error if self._guard is not None else None

    def second_order(self, loss_fn: LossFn, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Record the sharpness and gradient SNR due at the current step, on ``batch`` at the current weights.

        Call it once per step (a no-op when nothing is due), e.g. after ``loss.backward()``; ``loss_fn(output,
        target)`` must be a mean over the batch. Values belong to :attr:`step_count` (the weights before that
        step's update); ``.grad`` and the activation/delta records are not touched.
        """
        if self._attached and self._second_order.due(self._step):
            self._records.push(self._second_order.blocks(self._step, self.model, loss_fn, batch))

    def _record(self, step: int) -> None:
        """Record everything due at ``step`` except the update ratio (step record, outputs, parameters)."""
        self._record_step(step, skipped=False)
        rows = self._outputs.commit(self._loss_scale())
        self._records.push([Block(step, quantity, [(row.name, "output")], row.stats, row.raw[None], [row.meta],
                                  EXAMPLES, [row.batch], [row.dead]) for quantity, row in rows])
        if self._units is not None:
            for _, row in rows:
                if row.units is not None:
                    self._units.update(step, row.name, row.units)
        self._records.push(self._params.stats(step))

    def _pre_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._follows(optimizer):
            self._followed_optimizer = True
            self._begin_update()

    def _post_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._follows(optimizer):
            self._end_update()

    def before_update(self) -> None:
        """Manual drive: the step's gradients are final (accumulated, unscaled, clipped): record what is due.

        Raises:
            GradprobeError: if the probe follows the optimizer itself (``drive="optimizer"``).
        """
        self._manual("before_update")
        self._begin_update()

    def after_update(self) -> None:
        """Manual drive: the optimizer applied the step: record its update ratio and advance one step.

        Raises:
            GradprobeError: if the probe follows the optimizer itself (``drive="optimizer"``).
        """
        self._manual("after_update")
        self._end_update()

    def _manual(self, what: str) -> None:
        if self._drive != "manual":
            raise GradprobeError(f"probe.{what}(): the probe follows the optimizer's steps; "
                                 "create it with drive='manual' to call this")

    def _begin_update(self) -> None:
        if self._guard is not None:
            self._guard.check()
        step, since = self._step, self._cadence.clock()
        if self._cadence.due(step):
            self._record(step)
            if self._params.ratio_q is not None:
                self._snapshot = self._params.snapshot(reuse=True)
        if self._hist_schedule(step):
            self._records.buffer.hists += self._params.hists(step, self.options.bins)
        self._cadence.spend(since)

    def _end_update(self) -> None:
        since = self._cadence.clock()
        if self._snapshot is not None:
            self._records.push([self._params.ratio(self._step, self._snapshot)])
            self._snapshot = None
        since = self._cadence.end_step(since, self._step)
        self._advance()
        self._cadence.spend(since)

    def _advance(self) -> None:
        self._step += 1
        if self._guard is not None:
            self._guard.advance()
        self._stepped = True
        self._outputs.advance()
        if self._records.full(self._step, self.options.flush_every):
            self._flush()

    def step(self) -> None:
        """Record (if due) and advance one step, for loops that update weights without a torch optimizer.

        The update ratio is then measured between consecutive recorded steps.

        Raises:
            GradprobeError: if the probe already follows a torch optimizer's steps.
        """
        if self._followed_optimizer:
            raise GradprobeError("probe.step(): the probe already follows the optimizer's steps; don't call both")
        if self._guard is not None:
            self._guard.check()
        step, since = self._step, self._cadence.clock()
        if self._cadence.due(step):
            self._record(step)
            if self._params.ratio_q is not None:
                if self._last_weights is not None:
                    self._records.push([self._params.ratio(step, self._last_weights)])
                self._last_weights = self._params.snapshot(reuse=False)
        if self._hist_schedule(step):
            self._records.buffer.hists += self._params.hists(step, self.options.bins)
        since = self._cadence.end_step(since, step)
        self._advance()
        self._cadence.spend(since)

    def _loss_scale(self) -> torch.Tensor | None:
        """The scaler's current scale (a device tensor: no sync), None without an enabled scaler."""
        if self._scaler is None or not self._scaler.is_enabled():
            return None
        return self._scaler._get_scale_async()

    def _record_step(self, step: int, skipped: bool) -> None:
        if self._scaler is not None:
            self._records.push([Block(step, self._step_q, [("", R.STEP_TENSOR)], self._step_q.stats,
                              step_row(skipped, self._loss_scale())[None], [()])])

    def _before_update(self) -> None:
        """Called before ``scaler.update()``: if no optimizer step ran since the last one, the scaler skipped it."""
        if not self._stepped:
            since = self._cadence.clock()
            self._record_step(self._step, skipped=True)  # the scale the skipped backward overflowed with
            self._record_overflow(self._step)
            since = self._cadence.end_step(since, self._step)
            self._advance()  # drops the skipped step's held calls: scaled by an overflowing scale
            self._cadence.spend(since)
        self._stepped = False

    def _record_overflow(self, step: int) -> None:
        """On a skipped step: the parameter nearest the output whose (unscaled) gradient holds NaN/Inf."""
        held = [(name, p.grad) for name, p in self._params.named if p.grad is not None]
        found = last_nonfinite([g for _, g in held])
        if found is not None:
            q = self._overflow_q
            self._records.push([Block(step, q, [split_name(held[found[0]][0])], q.stats, found[1].reshape(1, 1), [()])])

    def push(self, blocks: list[Block]) -> None:
        """Buffer blocks computed outside the probe (e.g. by :mod:`gradprobe.noise_scale`) with its records."""
        self._records.push(blocks)

    def record_weights(self) -> None:
        """Record weight statistics now, at the current step (e.g. the final weights after training)."""
        self._records.push(self._params.weights(self._step))

    def diagnose(self, thresholds: Any = None) -> Any:
        """The diagnosis of what was recorded so far (see :func:`gradprobe.diagnose.engine.diagnose`)."""
        from gradprobe.diagnose.engine import diagnose

        return diagnose(self, thresholds)

    # -- results ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Move everything buffered to the host (one transfer per device) and hand it to the sink."""
        since = self._cadence.clock()
        self._flush()
        self._cadence.spend(since)

    def _flush(self) -> None:
        if not self._attached and self._records.empty:  # nothing can arrive after detach: no collective, so
            return  # one rank alone (rank 0 storing the run) may still read frame() or diagnose()
        stats = self._records.flush()
        if stats is not None and self.first_nonfinite is None:
            self.first_nonfinite = first_nonfinite(stats)
        if stats is not None and self._monitor is not None:
            raised = self._monitor.update(stats, self.structure)
            self.alerts += raised
            dispatch(raised, self._on_alert)

    def frame(self) -> pd.DataFrame:
        """All statistics recorded so far as a tidy frame with columns :data:`records.STAT_COLUMNS`."""
        self.flush()
        return self._records.frame()

    def units(self) -> pd.DataFrame:
        """Per-unit death and saturation so far, one row per unit, columns ``store.layout.UNIT_COLUMNS``.

        ``last_fired``/``dead_since``/``first_dead`` are recorded steps (the cadence: a unit that fired
        only between recorded steps is not seen to fire), -1 for none; see :mod:`gradprobe.units`.
        Empty with ``ProbeOptions(units=False)``.
        """
        return UnitTracker().frame() if self._units is None else self._units.frame()

    def resume_units(self, units: pd.DataFrame) -> None:
        """Continue the per-unit record from a stored snapshot (``Run.units()`` of a resumed run)."""
        if self._units is not None:
            self._units.restore(units)

    def hists(self) -> pd.DataFrame:
        """All histograms recorded so far, columns :data:`records.HIST_COLUMNS` (edges, counts as arrays)."""
        self.flush()
        return self._records.hists()


__all__ = ["Probe", "ProbeOptions", "Sink", "first_nonfinite"]

"""Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[GradprobeTrainerCallback()])`` probes a train().

Where gradients are read: ``Trainer`` runs forward and backward for every micro-batch of
``gradient_accumulation_steps``, then, on the last one, calls ``accelerator.clip_grad_norm_`` (with
``max_grad_norm``, or with ``inf`` only to measure the norm: both unscale fp16 gradients and
all-reduce XLA ones), then ``on_pre_optimizer_step``, ``optimizer.step()`` (accelerate's wrapper only
steps, unscaling is already done) and ``on_optimizer_step``. So the gradients the callback stores
are the ones the optimizer applies: accumulated, unscaled and *clipped* to ``max_grad_norm`` (the
Trainer's own ``grad_norm`` log is the norm before clipping). The update ratio is measured around
``optimizer.step()``, the true one of the step taken.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from torch import nn

from gradprobe import records as R
from gradprobe.alerts import AlertCallback
from gradprobe.integrations.session import CALLBACK_BUDGET, ProbeSession, missing, scalar_metrics
from gradprobe.schedules import Schedule

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError:
    raise missing("transformers", "hf") from None

_METRICS = ("loss", "grad_norm", "learning_rate")  # the Trainer's train logs kept in the run's metrics table
_ARGS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
         "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
         "lr_scheduler_type", "warmup_steps", "optim", "seed", "bf16", "fp16", "logging_steps")


class GradprobeTrainerCallback(TrainerCallback):
    """Record per-layer gradient, weight, activation and update statistics of a ``Trainer.train()``; one run per call.

    Args:
        every: fixed record cadence in optimizer steps; None records under ``budget``.
        budget: the probe's largest share of wall time when ``every`` is None.
        store: run store directory (default ``$GRADPROBE_STORE`` or ``./gradprobe-runs``); False: no store.
        report: also write the run's ``report.html`` at the end of training.
        on_alert: called with each live alert (:mod:`gradprobe.alerts`), after it is stored; None: a
            ``GradprobeAlert`` warning. An exception it raises (``gradprobe.StopTraining``) ends the fit.
        session_kwargs: further :class:`ProbeSession` arguments (``run_id``, ``experiment``,
            ``hist_every``, ``params``, ``modules``, ``options``, ...).

    Scalar statistics (``gradprobe/<kind>/<stat>/<layer>.<tensor>``) also go into
    ``trainer.state.log_history``, each recorded step at the ``step`` the Trainer logs that update
    at (merged into the Trainer's own entry when it logs that step), and into the ``logs`` of that
    log event for the callbacks after this one. The diagnosis is logged at ``on_train_end`` and
    kept in :attr:`diagnosis`. With several processes only the main one records.
    """

    def __init__(self, every: int | Schedule | None = None, *, budget: float = CALLBACK_BUDGET,
                 store: str | bool | None = None, report: bool = False, on_alert: AlertCallback | None = None,
                 **session_kwargs: Any) -> None:
        self.every, self.budget, self.store, self.report = every, budget, store, report
        self.session_kwargs = {**session_kwargs, "on_alert": on_alert}
        self.session: ProbeSession | None = None
        self.diagnosis: Any = None  # the last train()'s Diagnosis (None before its end)
        self.run_id: str | None = None  # the last train()'s stored run (None without a store)
        self._reset()

    def _reset(self) -> None:
        self._pending = False  # before_update() ran and on_optimizer_step has not come yet
        self._unlogged: dict[int, dict[str, float]] = {}  # flushed statistics not yet in the log history

    # -- train() lifetime ------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        """Start one probe and one stored run for this train() call."""
        if self.session is not None:  # the previous train() raised: keep its records, marked failed
            self._close(None, R.FAILED, "train() did not reach on_train_end")
        if not state.is_world_process_zero or model is None:
            return
        self._reset()
        self.diagnosis = None
        options = {"experiment": "hf", **self.session_kwargs}
        self.session = ProbeSession(model, every=self.every, budget=self.budget, store=self.store,
                                    config=_config(args, model), listeners=[self._collect], report=self.report,
                                    **options)
        # probe step == state.global_step before each update, also after resume_from_checkpoint
        self.session.probe.resume_at(state.global_step)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Close the run: store it, log the diagnosis, write the report if asked."""
        self._close(state, R.FINISHED, None)

    def _close(self, state: TrainerState | None, status: str, error: str | None) -> None:
        if self.session is None:
            return
        session, self.session = self.session, None
        if self._pending:
            session.after_update()
        self.diagnosis, self.run_id = session.finish(status, error), session.run_id  # flushes into _unlogged
        if state is not None:
            self._to_history(state, None)
        self._reset()

    # -- steps -----------------------------------------------------------------------------------
    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        """Gradients are final for the step (accumulated, unscaled, clipped): record what is due."""
        if self.session is None or self._pending:
            return
        self.session.before_update()
        self._pending = True

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        """The optimizer applied the step (or skipped it on fp16 overflow): record its update ratio."""
        if self.session is not None and self._pending:
            self._pending = False
            self.session.after_update()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Keep the Trainer's train logs in the run; put the statistics recorded so far into the log history."""
        if self.session is None:
            return
        values = {k: float(v) for k, v in (logs or {}).items() if k in _METRICS and isinstance(v, (int, float))}
        if "loss" in values:  # a train log (not an eval one) for the update state.global_step (1-based)
            epoch = max(0, math.ceil(state.epoch or 0) - 1)
            self.session.add_metrics(state.global_step - 1, epoch, values)
        self.session.probe.flush()  # the Trainer just synced for its own logs: one more small transfer
        self._to_history(state, logs)

    # -- outputs ---------------------------------------------------------------------------------
    def _collect(self, stats: pd.DataFrame) -> None:
        """Listener: keep a flushed frame's scalar statistics until the next log event."""
        for step, values in scalar_metrics(stats).items():
            self._unlogged.setdefault(step, {}).update(values)

    def _to_history(self, state: TrainerState, logs: dict[str, Any] | None) -> None:
        """Move the collected statistics into ``state.log_history`` in step order (and into ``logs`` if current)."""
        history = state.log_history
        for probe_step, values in sorted(self._unlogged.items()):
            step = probe_step + 1  # the Trainer logs update k (from 0) at step k + 1, as its own grad_norm
            if logs is not None and step == state.global_step and history and history[-1].get("step") == step:
                history[-1].update(values)  # the entry this log event just appended
                logs.update(values)
                continue
            at = len(history)
            while at and history[at - 1].get("step", -1) > step:
                at -= 1
            history.insert(at, {**values, "step": step})
        self._unlogged.clear()


def _config(args: TrainingArguments, model: nn.Module) -> dict[str, Any]:
    """The run's config: the TrainingArguments that shape the gradients and the model's own config."""
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)  # a PreTrainedModel's PretrainedConfig
    return {"model": type(model).__name__, "model_config": to_dict() if callable(to_dict) else {},
            "training_args": {name: getattr(args, name, None) for name in _ARGS}}


__all__ = ["GradprobeTrainerCallback"]

"""PyTorch Lightning integration: ``Trainer(callbacks=[GradprobeCallback()])`` probes, stores and diagnoses a fit.

Where gradients are read: Lightning runs forward and backward inside ``optimizer.step(closure)``, so a
torch pre-step hook would see the previous step's gradients. The callback reads them in
``on_before_optimizer_step``, which Lightning calls after the closure (after all micro-batches of
``accumulate_grad_batches`` and after AMP unscaling) and *before* ``gradient_clip_val`` clips them: the
stored gradients are the ones backprop produced, unclipped, so clipping cannot hide an exploding
gradient. The update ratio is the true one of the step taken (clipped, as applied): the callback
measures it in a step post-hook it registers on the followed torch optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.alerts import AlertCallback
from gradprobe.errors import GradprobeError
from gradprobe.integrations.session import CALLBACK_BUDGET, ProbeSession, missing, scalar_metrics
from gradprobe.schedules import Schedule

try:
    import lightning.pytorch as pl
    from lightning.pytorch.core.optimizer import LightningOptimizer
except ImportError as exc:
    raise missing("lightning", "lightning") from exc

LOSS_BUFFER = 4096  # batch losses kept on device before one transfer and one store write


class GradprobeCallback(pl.Callback):
    """Record per-layer gradient, weight, activation and update statistics of a Lightning fit; one stored run per fit.

    Args:
        every: fixed record cadence in optimizer steps; None records under ``budget``.
        budget: the probe's largest share of wall time when ``every`` is None.
        store: run store directory (default ``$GRADPROBE_STORE`` or ``./gradprobe-runs``); False: no store.
        report: also write the run's ``report.html`` at the end of the fit.
        optimizer: index of the optimizer to follow (``configure_optimizers`` order). With several
            optimizers (e.g. a GAN's generator and discriminator under manual optimization) the
            probe steps with this one and records only the parameters it holds and the modules they
            belong to; add one callback per optimizer to watch each (one run each).
        on_alert: called with each live alert (:mod:`gradprobe.alerts`), after it is stored; None: a
            ``GradprobeAlert`` warning. An exception it raises (``gradprobe.StopTraining``) ends the fit.
        session_kwargs: further :class:`ProbeSession` arguments (``run_id``, ``experiment``,
            ``hist_every``, ``params``, ``modules``, ``options``, ...).

    Scalar statistics also go to the trainer's loggers (``gradprobe/<kind>/<stat>/<layer>.<tensor>``
    at the trainer's ``global_step``); the diagnosis is logged at ``on_fit_end`` and kept in
    :attr:`diagnosis`. A step the optimizer skipped (e.g. a ``16-mixed`` GradScaler overflow) keeps
    its recorded gradients and gets an update ratio of 0.
    """

    def __init__(self, every: int | Schedule | None = None, *, budget: float = CALLBACK_BUDGET,
                 store: str | bool | None = None, report: bool = False, optimizer: int = 0,
                 on_alert: AlertCallback | None = None, **session_kwargs: Any) -> None:
        if not isinstance(optimizer, int) or optimizer < 0:
            raise GradprobeError(f"optimizer: {optimizer!r} is not an optimizer index; use an int >= 0")
        self.every, self.budget, self.store, self.report = every, budget, store, report
        self.optimizer_index = optimizer
        self.session_kwargs = {**session_kwargs, "on_alert": on_alert}
        self.session: ProbeSession | None = None
        self.diagnosis: Any = None  # the last fit's Diagnosis (None before the end of a fit)
        self.run_id: str | None = None  # the last fit's stored run (None without a store)
        self._reset()

    def _reset(self) -> None:
        self._optimizer: torch.optim.Optimizer | None = None
        self._handle: Any = None
        self._trainer: pl.Trainer | None = None
        self._pending = False  # before_update() ran and the optimizer has not applied that step yet
        self._global: dict[int, int] = {}  # probe step -> the trainer's global_step, for the loggers
        self._stepped = False  # the followed optimizer stepped during the current batch
        self._losses: list[tuple[int, int, torch.Tensor]] = []  # (probe step, epoch, detached loss)

    @property
    def state_key(self) -> str:
        """One key per followed optimizer, so one callback per optimizer can sit in one Trainer."""
        return self._generate_state_key(optimizer=self.optimizer_index)

    # -- fit lifetime ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start one probe and one stored run for this fit, following the chosen optimizer."""
        if trainer.global_rank != 0:  # DDP: gradients are all-reduced, rank 0 sees the global ones
            return
        self._reset()
        optimizers = trainer.optimizers
        if self.optimizer_index >= len(optimizers):
            raise GradprobeError(f"optimizer: {self.optimizer_index} is out of range; "
                                 f"configure_optimizers returned {len(optimizers)} optimizer(s)")
        self._optimizer = opt = _unwrap(optimizers[self.optimizer_index])
        kwargs = dict(self.session_kwargs)
        if len(optimizers) > 1:
            params, modules = _owned(pl_module, opt)
            kwargs.setdefault("params", params)
            kwargs.setdefault("modules", modules)
        kwargs.setdefault("experiment", "lightning")
        self._trainer = trainer
        self.diagnosis = None
        self.session = ProbeSession(pl_module, every=self.every, budget=self.budget, store=self.store,
                                    config=_config(trainer, pl_module, self.optimizer_index),
                                    listeners=[self._log_stats], report=self.report, **kwargs)
        self._handle = opt.register_step_post_hook(self._after_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the run: store it, log the diagnosis, write the report if asked."""
        self._close(R.FINISHED, None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Keep what was recorded, with the run marked failed."""
        self._close(R.FAILED, f"{type(exception).__name__}: {exception}")

    def _close(self, status: str, error: str | None) -> None:
        if self.session is None:
            return
        session, self.session = self.session, None
        if self._handle is not None:
            self._handle.remove()
        if self._pending:
            session.after_update()
        self._store_losses(session)
        self.diagnosis, self.run_id = session.finish(status, error), session.run_id
        self._reset()

    # -- steps -----------------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        """The followed optimizer's gradients are final (accumulated, unscaled, not yet clipped): record."""
        # pending: a closure evaluated again inside the same step (LBFGS) keeps the step's first reading
        if self.session is None or self._pending or _unwrap(optimizer) is not self._optimizer:
            return
        self._global[self.session.probe.step_count] = trainer.global_step
        self.session.before_update()
        self._pending = True

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Torch step post-hook: the step was applied, record its update ratio."""
        if self.session is not None and self._pending:
            self._pending, self._stepped = False, True
            self.session.after_update()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Close a step the optimizer skipped; keep the batch's loss (no host sync here)."""
        if self.session is None:
            return
        if self._pending:  # on_before_optimizer_step ran but the optimizer did not step
            self._pending, self._stepped = False, True
            self.session.after_update()
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            # automatic optimization hands back the loss divided by accumulate_grad_batches
            scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            # a micro-batch belongs to the step it accumulates into: the one that just ran, or the next
            step = self.session.probe.step_count - (1 if self._stepped else 0)
            self._losses.append((step, trainer.current_epoch, loss.detach() * scale))
            if self._stepped and len(self._losses) >= LOSS_BUFFER:  # whole steps only: one row per step
                self._store_losses(self.session)
        self._stepped = False

    # -- outputs ---------------------------------------------------------------------------------
    def _store_losses(self, session: ProbeSession) -> None:
        """Move the buffered batch losses to the host at once; store one mean loss per step."""
        if not self._losses:
            return
        values = torch.stack([v.float() for _, _, v in self._losses]).cpu().tolist()
        frame = pd.DataFrame([(s, e, v) for (s, e, _), v in zip(self._losses, values, strict=True)],
                             columns=["step", "epoch", "value"])
        frame = frame.groupby(["step", "epoch"], as_index=False)["value"].mean()  # micro-batches of a step
        frame["split"], frame["metric"] = R.TRAIN, R.LOSS
        session.add_metrics_frame(frame[list(R.METRIC_COLUMNS)])
        self._losses.clear()

    def _log_stats(self, stats: pd.DataFrame) -> None:
        """Send a flushed frame's scalar statistics to the trainer's loggers, at the global_step of each step."""
        per_step = scalar_metrics(stats)
        if self._trainer is not None:
            for step, values in sorted(per_step.items()):
                for logger in self._trainer.loggers:
                    logger.log_metrics(values, step=self._global.get(step, step))
        if per_step:
            last = max(per_step)
            self._global = {s: g for s, g in self._global.items() if s >= last}


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside a ``LightningOptimizer`` (or the optimizer itself)."""
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def _owned(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list[str], list[str]]:
    """Names of the parameters ``optimizer`` holds, and of the leaf modules they belong to.

    A parameterless leaf (an activation) belongs to the optimizer if its nearest ancestor with
    parameters has all of them in the optimizer (``generator.1`` in ``generator = Sequential(...)``).
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = [n for n, p in model.named_parameters() if id(p) in held and p.requires_grad]
    if not params:
        raise GradprobeError("optimizer: the followed optimizer holds none of the LightningModule's parameters")
    modules = dict(model.named_modules())
    leaves = []
    for name, module in modules.items():
        if list(module.children()):
            continue
        owner, path = module, name
        while not any(True for _ in owner.parameters()) and path:
            path = path.rpartition(".")[0]
            owner = modules[path]
        if all(id(p) in held for p in owner.parameters()) and any(True for _ in owner.parameters()):
            leaves.append(name)
    return params, leaves


def _config(trainer: pl.Trainer, module: pl.LightningModule, index: int) -> dict[str, Any]:
    """The run's config: the module's hyper-parameters and the trainer settings that shape the gradients."""
    return {"hparams": dict(module.hparams), "model": type(module).__name__,
            "trainer": {"max_epochs": trainer.max_epochs, "max_steps": trainer.max_steps,
                        "accumulate_grad_batches": trainer.accumulate_grad_batches,
                        "gradient_clip_val": trainer.gradient_clip_val,
                        "gradient_clip_algorithm": str(trainer.gradient_clip_algorithm),
                        "precision": str(trainer.precision),
                        "automatic_optimization": module.automatic_optimization,
                        "optimizers": [type(_unwrap(o)).__name__ for o in trainer.optimizers],
                        "followed_optimizer": index}}


__all__ = ["GradprobeCallback"]

"""A minimal training loop that steps the probe and writes everything to a run store."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.alerts import Alert, AlertCallback, alerts_frame
from gradprobe.data.datasets import Dataset
from gradprobe.diagnose.factors import median_factor, vanishing_factor
from gradprobe.probe import Probe
from gradprobe.sinks.base import RunSink  # re-exported: the interface lives in gradprobe.sinks
from gradprobe.store.artifacts import count_parts, remove_checkpoint
from gradprobe.store.layout import CHECKPOINT
from gradprobe.store.reader import Run
from gradprobe.store.writer import RunWriter
from gradprobe.train import setup
from gradprobe.train.checkpoint import Checkpoint, checkpoint_cadence, save_checkpoint
from gradprobe.train.config import RunConfig
from gradprobe.train.predict import save_outputs

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (steps done, total steps)
# Which loss the recorded gradient statistics differentiate: the data loss, without the L2 term
# (the optimiser still steps on data loss + L2), as the CS231n notebook records its heuristic.
GRAD_OF = "data_loss"


@dataclass
class RunResult:
    """What a finished (or diverged) run produced; the same is in the store when a writer was given."""

    config: RunConfig
    run_id: str | None
    status: str
    summary: dict[str, Any]
    frame: pd.DataFrame
    metrics: pd.DataFrame


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool, device: str) -> torch.Tensor:
    """The example order of one epoch, a pure function of (seed, epoch) so a resumed run sees the same."""
    if not shuffle:
        return torch.arange(n, device=device)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


class Trainer:
    """Trains one RunConfig on a Dataset with a Probe attached, evaluating on a cadence.

    Live alerts go to the writer's ``alerts`` table, then to ``on_alert`` (besides the ``gradprobe.alerts``
    log, which ``gradprobe run`` prints above its progress bars); no ``GradprobeAlert`` warning.
    """

    def __init__(self, cfg: RunConfig, data: Dataset, writer: RunWriter | None = None,
                 progress: Progress | None = None, sinks: Sequence[RunSink] = (),
                 clock: Callable[[], float] = time.perf_counter, on_alert: AlertCallback | None = None) -> None:
        self.cfg, self.data, self.writer, self.progress, self.clock = cfg, data, writer, progress, clock
        self.on_alert = on_alert
        self.sinks: list[RunSink] = ([writer] if writer is not None else []) + list(sinks)
        self.loss = setup.loss_kind(cfg, data)
        self.model = setup.build_model(cfg, data, self.loss)
        self.optimizer = setup.build_optimizer(cfg.optimizer, self.model)
        self._weights = setup.weight_matrices(self.model)  # what the L2 term covers
        self.plan = setup.schedule_for(cfg, len(data.y_train))
        self._metrics: list[tuple[int, int, str, str, float]] = []
        self._last_eval: dict[str, float] = {}
        self._counters: dict[str, Any] = {}  # carried over from a checkpoint by restore()
        self._prior = pd.DataFrame(columns=list(R.STAT_COLUMNS))  # stats recorded before a checkpoint
        self.step = 0

    def _sink(self, stats: pd.DataFrame, hists: pd.DataFrame) -> None:
        for sink in self.sinks:
            sink.add_stats(stats)
            if len(hists):
                sink.add_hists(hists)

    def _alert(self, alert: Alert) -> None:
        if self.writer is not None:
            self.writer.add_alerts(alerts_frame([alert]))
        if self.on_alert is not None:
            self.on_alert(alert)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Full-split loss (data loss + L2 term) and accuracy on train and, if present, test."""
        was = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        splits = [(R.TRAIN, self.data.x_train, self.data.y_train)]
        if self.data.x_test is not None and self.data.y_test is not None:
            splits.append((R.TEST, self.data.x_test, self.data.y_test))
        penalty = float(setup.l2_penalty(self._weights, self.cfg.optimizer.l2))
        rows = []
        for split, x, y in splits:
            x, y = x.to(self.cfg.device, setup.dtype_of(self.cfg)), y.to(self.cfg.device)
            logits = self.model(x)
            loss = float(setup.objective(logits, y, self.loss)) + penalty
            acc = float(setup.correct(logits, y, self.loss)) / len(y)
            out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
            rows += [(self.step, epoch, split, R.LOSS, loss), (self.step, epoch, split, R.ACCURACY, acc)]
        self._metrics += rows
        self._last_eval = out
        frame = pd.DataFrame(rows, columns=list(R.METRIC_COLUMNS))
        for sink in self.sinks:
            sink.add_metrics(frame)
        self.model.train(was)
        return out

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One update; returns the batch loss (data loss + L2 term) at the weights before it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = setup.objective(self.model(x), y, self.loss)
        loss.backward()  # the data loss only: the probe records dL_data/dW; _complete_step adds the rest
        with torch.no_grad():
            total = loss.detach() + setup.l2_penalty(self._weights, self.cfg.optimizer.l2)
        self.optimizer.step()
        return float(total)

    @torch.no_grad()
    def _complete_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Step pre-hook registered after the probe's: add l2 * W to the gradients, apply decoupled decay.

        Running after the probe's pre-step hook, the probe sees the data-loss gradient and snapshots
        the weights before the decay, so its update ratio measures the whole update.
        """
        cfg = self.cfg.optimizer
        if cfg.l2 > 0:
            weights = [p for p in self._weights if p.grad is not None]
            torch._foreach_add_([p.grad for p in weights], weights, alpha=cfg.l2)  # type: ignore[misc]
        if cfg.weight_decay > 0 and cfg.name != "adam":  # decoupled decay; Adam uses AdamW
            torch._foreach_mul_(list(self.model.parameters()), 1 - cfg.lr * cfg.weight_decay)

    def restore(self, ckpt: Checkpoint, prior: pd.DataFrame) -> None:
        """Continue from ``ckpt`` (weights, optimiser state, step, metrics); ``prior``: its stats so far."""
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.step = ckpt.step
        self._metrics = [tuple(row) for row in ckpt.metrics]  # type: ignore[misc]
        self._counters = dict(ckpt.counters)
        self._prior = prior

    def _checkpoint(self, probe: Probe, counters: dict[str, Any]) -> None:
        """Flush every record made so far, then save the state to continue from this step."""
        assert self.writer is not None
        probe.flush()
        self.writer.add_units(probe.units())
        self.writer.flush()
        ckpt = Checkpoint(self.step, self.model.state_dict(), self.optimizer.state_dict(),
                          [list(row) for row in self._metrics], count_parts(self.writer.path),
                          {**counters, "first_nonfinite": probe.first_nonfinite})
        save_checkpoint(self.writer.path / CHECKPOINT, ckpt)

    def _nonfinite(self, probe: Probe, counters: dict[str, Any]) -> None:
        """Note the first non-finite loss: its step and, if the probe missed it, the first bad tensor."""
        counters["nonfinite_steps"] += 1
        if counters.get("first_nonfinite_loss_step") is None:
            counters["first_nonfinite_loss_step"] = self.step - 1
            probe.flush()
            if probe.first_nonfinite is None:  # the probe did not record this step, or only the loss overflowed
                probe.first_nonfinite = first_nonfinite_param(self.model, self.step - 1) or {
                    "step": self.step - 1, "layer": "", "tensor": "loss", "kind": "loss"}
                log.warning("non-finite loss at step %d", self.step - 1)

    def _probe(self, first_nonfinite: dict[str, Any] | None) -> Probe:
        """The probe for this run, starting at the current step (later than 0 after restore)."""
        record, plan = self.cfg.record, self.plan
        probe = Probe(self.model, self.optimizer, every=plan.recording(record.every),
                      hist_every=plan.recording(record.hist_every),
                      params=record.params, modules=record.modules, options=setup.probe_options(record),
                      sink=self._sink, nan_guard=record.nan_guard, sharpness_every=record.sharpness_every,
                      snr_every=record.snr_every, on_alert=self._alert)
        probe.first_nonfinite = first_nonfinite
        probe.resume_at(self.step)
        if self.writer is not None and self.step > 0:  # resumed: the units snapshot of the checkpoint
            probe.resume_units(Run(self.writer.path).units())
        return probe

    def run(self) -> RunResult:
        """Train to the end, or until the loss is non-finite (status ``diverged``).

        Non-finite gradients make the next loss non-finite, so the run stops one step later. With
        ``train.stop_on_nonfinite`` off the run goes on and counts the non-finite losses; either
        way it ends ``diverged`` if the loss or any recorded statistic was ever NaN/Inf.
        """
        cfg, plan = self.cfg, self.plan
        x_all, y_all = self.data.x_train.to(cfg.device, setup.dtype_of(cfg)), self.data.y_train.to(cfg.device)
        n = len(y_all)
        batch = cfg.train.batch_size or n
        eval_every = plan.cadence(cfg.train.eval_every)
        ckpt_every = checkpoint_cadence(cfg.train.checkpoint_every, plan.steps_per_epoch, plan.total_steps)
        start = self.clock()
        counters: dict[str, Any] = {"seconds": 0.0, "nonfinite_steps": 0, "last_loss": math.nan,
                                    "first_nonfinite_loss_step": None, **self._counters}
        counters.setdefault("before", None)
        before = counters["before"] = counters["before"] or self.evaluate(epoch=0)
        probe = self._probe(counters.pop("first_nonfinite", None))
        completion = self.optimizer.register_step_pre_hook(self._complete_step)  # after the probe's: see there
        tick = max(1, plan.total_steps // 200)
        stop = False
        with probe, completion:  # the handle removes the hook on exit
            while self.step < plan.total_steps and not stop:
                epoch, offset = divmod(self.step, plan.steps_per_epoch)
                order = epoch_order(n, cfg.seed, epoch, cfg.train.shuffle, cfg.device)
                for b in range(offset, plan.steps_per_epoch):
                    idx = order[b * batch:(b + 1) * batch]
                    probe.second_order(lambda out, y: setup.objective(out, y, self.loss), (x_all[idx], y_all[idx]))
                    counters["last_loss"] = self._train_step(x_all[idx], y_all[idx])
                    self.step += 1
                    if not math.isfinite(counters["last_loss"]):
                        self._nonfinite(probe, counters)
                        stop = cfg.train.stop_on_nonfinite
                        if stop:
                            break
                    if self.step % eval_every == 0:
                        self.evaluate(epoch=self.step // plan.steps_per_epoch)
                    if self.writer is not None and self.step % ckpt_every == 0 and self.step < plan.total_steps:
                        self._checkpoint(probe, {**counters, "seconds": counters["seconds"] + self.clock() - start})
                    if self.progress is not None and (self.step % tick == 0 or self.step == plan.total_steps):
                        self.progress(self.step, plan.total_steps)
                    if self.step >= plan.total_steps:
                        break
            probe.record_weights()
        after = evaluation_at(self._metrics, self.step) or self.evaluate(math.ceil(self.step / plan.steps_per_epoch))
        frame = pd.concat([self._prior, probe.frame()], ignore_index=True) if len(self._prior) else probe.frame()
        metrics = pd.DataFrame(self._metrics, columns=list(R.METRIC_COLUMNS))
        counters["seconds"] += self.clock() - start
        summary = run_summary(frame, self.model.weight_layers(), before, after,
                           {**counters, "steps": self.step, "first_nonfinite": probe.first_nonfinite,
                            "structure": probe.structure, "probe_cost": probe.cost,
                            "nan_culprit": probe.nan_culprit.as_dict() if probe.nan_culprit else None},
                           frozen_layers(self.model))
        status = R.DIVERGED if counters["nonfinite_steps"] or probe.first_nonfinite else R.FINISHED
        if self.writer is not None:
            save_outputs(self.writer.path, self.model, self.data)
            self.writer.add_units(probe.units())  # the per-unit snapshot of the whole run
        for sink in self.sinks:
            sink.finish(status, summary)
        if self.writer is not None:  # the run is complete: nothing left to resume
            remove_checkpoint(self.writer.path / CHECKPOINT)
        run_id = self.writer.run_id if self.writer is not None else None
        return RunResult(cfg, run_id, status, summary, frame, metrics)


def evaluation_at(rows: list[tuple[int, int, str, str, float]], step: int) -> dict[str, float] | None:
    """The evaluation already made at ``step`` (e.g. the last epoch's), so the end of a run does not repeat it."""
    found = {f"{split}_{metric}": value for s, _, split, metric, value in rows if s == step}
    return found if f"{R.TRAIN}_{R.LOSS}" in found else None


def first_nonfinite_param(model: torch.nn.Module, step: int) -> dict[str, Any] | None:
    """The first parameter (in model order) whose gradient or value holds NaN/Inf, as a record key."""
    for name, p in model.named_parameters():
        for kind, t in ((R.GRAD, p.grad), (R.WEIGHT, p)):
            if t is not None and not bool(torch.isfinite(t).all()):
                layer, _, tensor = name.rpartition(".")
                return {"step": step, "layer": layer, "tensor": tensor, "kind": kind}
    return None


def frozen_layers(model: torch.nn.Module) -> list[str]:
    """Names of the weight matrices (parameters with >= 2 dims) that have requires_grad False, in model order."""
    return [name for name, p in model.named_parameters() if p.dim() >= 2 and not p.requires_grad]


def run_summary(frame: pd.DataFrame, weights: list[str], before: dict[str, float], after: dict[str, float],
             counters: dict[str, Any], frozen: list[str]) -> dict[str, Any]:
    """The run's summary: losses and accuracies before/after, vanishing factors, frozen layers and counters."""
    return {
        "final_loss": after["train_loss"],
        "train_accuracy": after["train_accuracy"],
        "test_accuracy": after.get("test_accuracy"),
        "accuracy_before": before["train_accuracy"],
        "loss_before": before["train_loss"],
        "grad_of": GRAD_OF,
        "vanishing_factor": vanishing_factor(frame, weights),
        "vanishing_factor_median": median_factor(frame, weights),
        "weight_layers": weights,
        "frozen_layers": frozen,
        "structure": counters.get("structure"),
        "steps": counters["steps"],
        "seconds": round(counters["seconds"], 3),
        "last_batch_loss": counters["last_loss"],
        "first_nonfinite": counters["first_nonfinite"],
        "nan_culprit": counters.get("nan_culprit"),  # with record.nan_guard: the module that produced the first NaN
        "probe_cost": counters.get("probe_cost"),  # {budget, overhead, recorded_steps, steps}: see Probe.cost
        "nonfinite_steps": counters["nonfinite_steps"],
        "first_nonfinite_loss_step": counters["first_nonfinite_loss_step"],
    }


__all__ = ["GRAD_OF", "Progress", "RunResult", "RunSink", "Trainer", "epoch_order", "evaluation_at",
           "first_nonfinite_param", "frozen_layers", "run_summary"]

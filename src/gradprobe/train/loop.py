"""A minimal training loop that steps the probe and writes everything to a run store."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.data.datasets import Dataset
from gradprobe.diagnose.factors import median_factor, vanishing_factor
from gradprobe.probe import Probe
from gradprobe.store.atomic import atomic_path
from gradprobe.store.layout import MODEL
from gradprobe.store.writer import RunWriter
from gradprobe.train import setup
from gradprobe.train.config import RunConfig

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (steps done, total steps)


class RunSink(Protocol):
    """Where a run's records go as they are made: the run store, live TensorBoard, ..."""

    def add_stats(self, df: pd.DataFrame) -> None: ...
    def add_hists(self, df: pd.DataFrame) -> None: ...
    def add_metrics(self, df: pd.DataFrame) -> None: ...
    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None: ...


@dataclass
class RunResult:
    """What a finished (or diverged) run produced; the same is in the store when a writer was given."""

    config: RunConfig
    run_id: str | None
    status: str
    summary: dict[str, Any]
    frame: pd.DataFrame
    metrics: pd.DataFrame


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool, device: str) -> torch.Tensor:
    """The example order of one epoch, a pure function of (seed, epoch) so a resumed run sees the same."""
    if not shuffle:
        return torch.arange(n, device=device)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


class Trainer:
    """Trains one RunConfig on a Dataset with a Probe attached, evaluating on a cadence."""

    def __init__(self, cfg: RunConfig, data: Dataset, writer: RunWriter | None = None,
                 progress: Progress | None = None, sinks: Sequence[RunSink] = (),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfg, self.data, self.writer, self.progress, self.clock = cfg, data, writer, progress, clock
        self.sinks: list[RunSink] = ([writer] if writer is not None else []) + list(sinks)
        self.loss = setup.loss_kind(cfg, data)
        self.model = setup.build_model(cfg, data, self.loss)
        self.optimizer = setup.build_optimizer(cfg.optimizer, self.model)
        self.plan = setup.schedule_for(cfg, len(data.y_train))
        self._metrics: list[tuple[int, int, str, str, float]] = []
        self._last_eval: dict[str, float] = {}
        self.step = 0

    def _sink(self, stats: pd.DataFrame, hists: pd.DataFrame) -> None:
        for sink in self.sinks:
            sink.add_stats(stats)
            if len(hists):
                sink.add_hists(hists)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Full-split loss (data loss + L2 term) and accuracy on train and, if present, test."""
        was = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        splits = [(R.TRAIN, self.data.x_train, self.data.y_train)]
        if self.data.x_test is not None and self.data.y_test is not None:
            splits.append((R.TEST, self.data.x_test, self.data.y_test))
        penalty = float(setup.l2_penalty(self.model, self.cfg.optimizer.l2))
        rows = []
        for split, x, y in splits:
            x, y = x.to(self.cfg.device), y.to(self.cfg.device)
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
        opt_cfg = self.cfg.optimizer
        self.optimizer.zero_grad(set_to_none=True)
        loss = setup.objective(self.model(x), y, self.loss) + setup.l2_penalty(self.model, opt_cfg.l2)
        loss.backward()
        if opt_cfg.weight_decay > 0 and opt_cfg.name != "adam":  # decoupled decay; Adam uses AdamW
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(1 - opt_cfg.lr * opt_cfg.weight_decay)
        self.optimizer.step()
        return float(loss.detach())

    def run(self) -> RunResult:
        """Train to the end, or until the loss is non-finite (status ``diverged``)."""
        cfg, plan = self.cfg, self.plan
        record = cfg.record
        x_all = self.data.x_train.to(cfg.device)
        y_all = self.data.y_train.to(cfg.device)
        n = len(y_all)
        batch = cfg.train.batch_size or n
        eval_every = plan.cadence(cfg.train.eval_every)
        start = self.clock()
        before = self.evaluate(epoch=0)
        status, last_loss = R.FINISHED, math.nan
        probe = Probe(self.model, self.optimizer, every=plan.cadence(record.every),
                      hist_every=None if record.hist_every is None else plan.cadence(record.hist_every),
                      params=record.params, modules=record.modules, options=setup.probe_options(record),
                      sink=self._sink)
        tick = max(1, plan.total_steps // 200)
        with probe:
            while self.step < plan.total_steps:
                epoch, offset = divmod(self.step, plan.steps_per_epoch)
                order = _epoch_order(n, cfg.seed, epoch, cfg.train.shuffle, cfg.device)
                for b in range(offset, plan.steps_per_epoch):
                    idx = order[b * batch:(b + 1) * batch]
                    last_loss = self._train_step(x_all[idx], y_all[idx])
                    self.step += 1
                    if cfg.train.stop_on_nonfinite and (not math.isfinite(last_loss) or probe.saw_nonfinite()):
                        status = R.DIVERGED
                        break
                    if self.step % eval_every == 0:
                        self.evaluate(epoch=self.step // plan.steps_per_epoch)
                    if self.progress is not None and (self.step % tick == 0 or self.step == plan.total_steps):
                        self.progress(self.step, plan.total_steps)
                    if self.step >= plan.total_steps:
                        break
                if status == R.DIVERGED:
                    break
            probe.record_weights()
        evaluated_now = self._metrics[-1][0] == self.step
        after = self._last_eval if evaluated_now else self.evaluate(math.ceil(self.step / plan.steps_per_epoch))
        frame = probe.frame()
        metrics = pd.DataFrame(self._metrics, columns=list(R.METRIC_COLUMNS))
        weights = self.model.weight_layers()
        summary = {
            "final_loss": after["train_loss"],
            "train_accuracy": after["train_accuracy"],
            "test_accuracy": after.get("test_accuracy"),
            "accuracy_before": before["train_accuracy"],
            "loss_before": before["train_loss"],
            "vanishing_factor": vanishing_factor(frame, weights),
            "vanishing_factor_median": median_factor(frame, weights),
            "weight_layers": weights,
            "steps": self.step,
            "seconds": round(self.clock() - start, 3),
            "last_batch_loss": last_loss,
            "first_nonfinite": probe.first_nonfinite,
        }
        if self.writer is not None:
            with atomic_path(self.writer.path / MODEL) as tmp:
                torch.save(self.model.state_dict(), tmp)
        for sink in self.sinks:
            sink.finish(status, summary)
        run_id = self.writer.run_id if self.writer is not None else None
        return RunResult(cfg, run_id, status, summary, frame, metrics)


__all__ = ["Progress", "RunResult", "RunSink", "Trainer"]

"""The training loop of an ensemble: ``Trainer.run``'s semantics for M same-shaped models in one computation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.data.datasets import Dataset
from gradprobe.probe import first_nonfinite
from gradprobe.store.writer import RunWriter
from gradprobe.train import setup
from gradprobe.train.config import RunConfig
from gradprobe.train.ensemble_net import BatchedMLP
from gradprobe.train.ensemble_optim import FlatOptimizer
from gradprobe.train.ensemble_record import Recorder

# The loop's example order and summary, so both engines agree by construction (private names there).
from gradprobe.train.loop import Progress, RunResult, epoch_order, evaluation_at, frozen_layers, run_summary
from gradprobe.train.predict import save_outputs

log = logging.getLogger(__name__)
_GATHER_BYTES = 64 * 2**20  # gather a whole epoch's batches at once when they fit in this much memory
_CHUNK, _CHUNK_VALUES = 256, 2**20  # recorded steps buffered before one move to the host: at least, values


class EnsembleTrainer:
    """Trains the RunConfigs of one group (see ``ensemble.can_ensemble``) together on ``data``."""

    def __init__(self, cfgs: list[RunConfig], data: Dataset, writers: Sequence[RunWriter | None],
                 progress: Progress | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfgs, self.data, self.writers, self.progress, self.clock = cfgs, data, writers, progress, clock
        cfg = cfgs[0]
        self.loss = setup.loss_kind(cfg, data)
        self.models = [setup.build_model(c, data, self.loss) for c in cfgs]
        self.net = BatchedMLP(self.models, self.loss, cfg.optimizer.l2)
        self.optimizer = FlatOptimizer(cfg.optimizer, self.net.flat)
        self.plan = setup.schedule_for(cfg, len(data.y_train))
        rec = cfg.record
        self.recorder = Recorder(rec, self.models, self.net, self.plan.recording(rec.every),
                                 self.plan.recording(rec.hist_every))
        self.metrics: list[list[tuple[int, int, str, str, float]]] = [[] for _ in cfgs]
        self.frames: list[list[pd.DataFrame]] = [[] for _ in cfgs]
        self.stop: list[int | None] = [None] * len(cfgs)  # steps done when a member stopped on a non-finite loss
        self.nonfinite_steps = [0] * len(cfgs)
        self.first_loss_step: list[int | None] = [None] * len(cfgs)
        self.first_param: list[dict[str, Any] | None] = [None] * len(cfgs)
        self.frozen = self.net.flat.detach().clone()  # final weights of diverged members
        self._y = self._labels(data.y_train)
        self._mask = torch.ones(len(cfgs), dtype=torch.bool)  # members still training
        self._any_stopped = False
        self._unshuffled: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._steps: list[int] = []
        self._written = [0] * len(cfgs)  # metric rows already handed to each writer
        self._recording = 0.0  # seconds spent in the recorder, for each member's probe_cost
        self._recorded_steps: list[int] = []
        self._overhead = 0.0

    def _labels(self, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.cfgs[0].device)
        return y.to(setup.dtype_of(self.cfgs[0])) if self.loss == "bce" else y

    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor, steps: list[int], epochs: list[int],
                 who: list[int]) -> list[dict[str, float]]:
        """Full-split loss and accuracy of the members ``who`` (rows of ``flat``), as ``Trainer.evaluate``."""
        device, dtype = self.cfgs[0].device, setup.dtype_of(self.cfgs[0])
        splits = [(R.TRAIN, self.data.x_train, self._y)]
        if self.data.x_test is not None and self.data.y_test is not None:
            splits.append((R.TEST, self.data.x_test, self._labels(self.data.y_test)))
        cols = [self.net.penalty(flat)]
        for _, x, y in splits:
            logits = self.net.forward(flat, x.to(device, dtype)).z[-1]  # (M, N, out)
            yy = y.expand(flat.shape[0], -1)
            cols += [self.net.data_loss(logits, yy), self.net.correct(logits, yy).to(flat.dtype)]
        table = torch.stack(cols, dim=1).tolist()  # one host transfer: (M, 1 + 2 * splits)
        out = []
        for m in who:
            row, res, penalty = table[m], {}, table[m][0]
            rows = []
            for k, (split, _, y) in enumerate(splits):
                loss, acc = row[1 + 2 * k] + penalty, int(row[2 + 2 * k]) / len(y)
                res[f"{split}_loss"], res[f"{split}_accuracy"] = loss, acc
                rows += [(steps[m], epochs[m], split, R.LOSS, loss), (steps[m], epochs[m], split, R.ACCURACY, acc)]
            self.metrics[m] += rows  # written to the store at the next flush, in one frame per member
            out.append(res)
        return out

    def _active(self) -> list[int]:
        return [m for m, s in enumerate(self.stop) if s is None]

    def _flush(self, last: list[int]) -> None:
        for m, writer in enumerate(self.writers):
            if writer is not None and len(self.metrics[m]) > self._written[m]:
                writer.add_metrics(pd.DataFrame(self.metrics[m][self._written[m]:], columns=list(R.METRIC_COLUMNS)))
                self._written[m] = len(self.metrics[m])
        since = self.clock()
        moved = self.recorder.frames(last)
        self._recording += self.clock() - since
        for (stats, hists), frames, writer in zip(moved, self.frames, self.writers):
            if len(stats):
                frames.append(stats)
                if writer is not None:
                    writer.add_stats(stats)
            if len(hists) and writer is not None:
                writer.add_hists(hists)

    def _nonfinite(self, step: int, losses: torch.Tensor) -> None:
        """Count a non-finite loss per member, as the loop does; with stop_on_nonfinite, freeze those members."""
        stop_on = self.cfgs[0].train.stop_on_nonfinite
        for m in self._active():
            if math.isfinite(float(losses[m])):
                continue
            self.nonfinite_steps[m] += 1
            if self.first_loss_step[m] is None:
                self.first_loss_step[m] = step - 1
                self.first_param[m] = self._bad_param(m, step - 1)
            if stop_on:
                self.stop[m] = step
                self.frozen[m] = self.net.flat[m]
        self._mask = torch.tensor([s is None for s in self.stop])
        self._any_stopped = not all(self._mask.tolist())

    def _bad_param(self, m: int, step: int) -> dict[str, Any] | None:
        """``loop.first_nonfinite_param`` for member ``m``: first parameter whose gradient or value is not finite."""
        for slot in self.net.slots:
            for kind, flat in ((R.GRAD, self.net.grad), (R.WEIGHT, self.net.flat)):
                if not bool(torch.isfinite(flat[m, slot.start:slot.stop]).all()):
                    layer, _, tensor = slot.name.rpartition(".")
                    return {"step": step, "layer": layer, "tensor": tensor, "kind": kind}
        return None

    def _batches(self, epoch: int, x_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        cfg, n = self.cfgs[0], len(self._y)
        if not cfg.train.shuffle and self._unshuffled is not None:
            return self._unshuffled  # every epoch in the same order (full-batch runs: every step)
        orders = torch.stack([epoch_order(n, c.seed, epoch, cfg.train.shuffle, cfg.device) for c in self.cfgs])
        if orders.numel() * x_all.shape[1] * 4 <= _GATHER_BYTES:
            out: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] = (x_all[orders], self._y[orders], None)
        else:
            out = (x_all, self._y, orders)
        if not cfg.train.shuffle:
            self._unshuffled = out
        return out

    def train(self) -> list[float]:
        """The training steps; returns each member's last batch loss."""
        cfg, plan, net, rec = self.cfgs[0], self.plan, self.net, self.recorder
        x_all, size = self.data.x_train.to(cfg.device, setup.dtype_of(cfg)), len(self.cfgs)
        batch = cfg.train.batch_size or len(self._y)
        eval_every = plan.cadence(cfg.train.eval_every)
        tick = max(1, plan.total_steps // 200)
        last_loss = torch.full((size,), math.nan)
        step, recorded = 0, 0
        # hot-loop names bound once: each step is a few dozen tiny ops, so lookups show
        train_pass, optimizer, grad = net.train_pass, self.optimizer, net.grad
        every, hist_every = rec.every, rec.hist_every
        decay, l2 = cfg.optimizer.weight_decay > 0, cfg.optimizer.l2 > 0
        chunk = max(_CHUNK, _CHUNK_VALUES // max(1, size * rec.row_width))
        while step < plan.total_steps and self._active():
            epoch, offset = divmod(step, plan.steps_per_epoch)
            xs, ys, orders = self._batches(epoch, x_all)
            for b in range(offset, plan.steps_per_epoch):
                sl = slice(b * batch, (b + 1) * batch)
                if orders is None:
                    xb, yb = xs[:, sl], ys[:, sl]
                else:
                    idx = orders[:, sl]
                    xb, yb = xs[idx], ys[idx]
                p = train_pass(xb, yb)
                due, hist = every(step), hist_every(step)
                if due or hist:
                    since = self.clock()
                    if due:  # the data-loss gradient and the weights before any part of the update, as the loop
                        rec.before_step(p)
                    if hist:
                        rec.hists(step)
                    self._recording += self.clock() - since
                if l2:
                    net.add_l2()
                if decay:
                    optimizer.decay()
                optimizer.step(grad)
                if due:
                    since = self.clock()
                    rec.after_step(step)
                    self._recording += self.clock() - since
                    self._recorded_steps.append(step)
                    recorded += 1
                step += 1
                stopped = self._any_stopped
                losses = torch.where(self._mask, p.loss, 0.0) if stopped else p.loss
                last_loss = torch.where(self._mask, p.loss, last_loss) if stopped else p.loss
                if not math.isfinite(float(losses.sum())):
                    self._nonfinite(step, p.loss)
                    if not self._active():
                        break
                if step % eval_every == 0:
                    active = self._active()
                    self.evaluate(net.flat, [step] * size, [step // plan.steps_per_epoch] * size, active)
                if recorded >= chunk:
                    self._flush([s if s is not None else step for s in self.stop])
                    recorded = 0
                if self.progress is not None and (step % tick == 0 or step == plan.total_steps):
                    self.progress(step, plan.total_steps)
                if step >= plan.total_steps:
                    break
        self._steps = [s if s is not None else step for s in self.stop]
        self._flush(self._steps)
        return last_loss.tolist()

    def run(self) -> list[RunResult]:
        """Train every member to the end (or its divergence) and return one RunResult each, as ``Trainer.run``."""
        plan, size = self.plan, len(self.cfgs)
        start = self.clock()
        before = self.evaluate(self.net.flat, [0] * size, [0] * size, list(range(size)))
        last_loss = self.train()
        final = self.net.flat.detach().clone()
        for m, s in enumerate(self.stop):
            if s is not None:
                final[m] = self.frozen[m]
        steps = self._steps
        for frame, frames, writer in zip(self.recorder.final_frames(final, steps), self.frames, self.writers):
            if len(frame):
                frames.append(frame)
                if writer is not None:
                    writer.add_stats(frame)
        done = [evaluation_at(self.metrics[m], steps[m]) for m in range(size)]  # the last epoch's, if at the end
        todo = [m for m in range(size) if done[m] is None]
        fresh = iter(self.evaluate(final, steps, [math.ceil(s / plan.steps_per_epoch) for s in steps], todo))
        after = [d if d is not None else next(fresh) for d in done]
        self._flush(steps)
        wall = self.clock() - start
        seconds = wall / size  # the group's wall time shared equally among its members
        self._overhead = self._recording / wall if wall > 0 else 0.0  # the recorder's share, as Probe.cost
        return [self._result(m, before[m], after[m], last_loss[m], final, seconds) for m in range(size)]

    def _result(self, m: int, before: dict[str, float], after: dict[str, float], last_loss: float,
                final: torch.Tensor, seconds: float) -> RunResult:
        cfg, model, writer = self.cfgs[m], self.models[m], self.writers[m]
        frame = pd.concat(self.frames[m], ignore_index=True) if self.frames[m] else pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in zip(R.STAT_COLUMNS, ("int64",) + ("object",) * 4 + ("float64",))})
        frame = frame[list(R.STAT_COLUMNS)]
        weights = model.weight_layers()
        first = self.first_loss_step[m]
        bad = first_nonfinite(frame if first is None else frame[frame["step"] <= first])
        cost = {"budget": None, "overhead": self._overhead, "steps": self._steps[m],
                "recorded_steps": sum(s < self._steps[m] for s in self._recorded_steps)}
        counters = {"steps": self._steps[m], "seconds": seconds, "last_loss": last_loss, "probe_cost": cost,
                    "first_nonfinite": bad if bad is not None or first is None else self.first_param[m],
                    "nonfinite_steps": self.nonfinite_steps[m], "first_nonfinite_loss_step": first}
        grad = (frame["kind"].to_numpy() == R.GRAD) & (frame["stat"].to_numpy() == R.MEAN_ABS)
        summary = run_summary(frame[grad], weights, before, after, counters,  # its factors read only these rows
                              frozen_layers(model))
        status = R.DIVERGED if self.nonfinite_steps[m] or counters["first_nonfinite"] is not None else R.FINISHED
        with torch.no_grad():
            for view, (_, p) in zip(self.net.views(final[m:m + 1]), model.named_parameters()):
                p.copy_(view[0])
        if writer is not None:
            save_outputs(writer.path, model, self.data)
            writer.finish(status, summary)
        metrics = pd.DataFrame(self.metrics[m], columns=list(R.METRIC_COLUMNS))
        return RunResult(cfg, writer.run_id if writer is not None else None, status, summary, frame, metrics)


__all__ = ["EnsembleTrainer", "first_nonfinite"]

"""What every trainer integration does around a training session: one manual-drive probe, one stored run.

A trainer calls :meth:`ProbeSession.before_update` where the step's gradients are final and
:meth:`ProbeSession.after_update` once the optimizer applied them; :meth:`ProbeSession.finish`
stores the summary the diagnosis reads, logs the diagnosis and writes the report if asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from gradprobe import records as R
from gradprobe.alerts import Alert, AlertCallback, alerts_frame, announce
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe
from gradprobe.schedules import Schedule
from gradprobe.sinks.base import RunSink

log = logging.getLogger(__name__)
CALLBACK_BUDGET = 0.01  # the trainer callbacks' default cadence: at most 1% of the fit's wall time in the probe
# Under torch.distributed a timed cadence would differ between ranks: the callbacks' default is then this fixed one.
DISTRIBUTED_EVERY = 25
StatsListener = Callable[[pd.DataFrame], None]  # e.g. a trainer's own logger, fed at every flush


def missing(package: str, extra: str) -> GradprobeError:
    """The one-line error for an integration imported without its library."""
    return GradprobeError(f"{package} is not installed; install it with: pip install 'gradprobe[{extra}]'")


def scalar_metrics(stats: pd.DataFrame, stats_to_log: Sequence[str] = (R.MEAN_ABS, R.NORM, R.UPDATE_RATIO,
                                                                        R.DEAD_FRAC)) -> dict[int, dict[str, float]]:
    """Per step, ``{"gradprobe/<kind>/<stat>/<layer>.<tensor>": value}`` for trainer loggers (finite values only)."""
    rows = stats[stats["stat"].isin(stats_to_log)]
    out: dict[int, dict[str, float]] = {}
    for step, layer, tensor, kind, stat, value in rows.itertuples(index=False):
        if pd.notna(value) and abs(value) != float("inf"):
            name = f"{layer}.{tensor}" if layer else tensor
            out.setdefault(int(step), {})[f"gradprobe/{kind}/{stat}/{name}"] = float(value)
    return out


class ProbeSession:
    """A manual-drive :class:`Probe` on ``model`` whose records go to a run store and to listeners.

    Args:
        model: the module being trained (a LightningModule, a transformers model, a Keras model).
        every: fixed record cadence; None records under ``budget`` (what :func:`gradprobe.watch` does), or
            every :data:`DISTRIBUTED_EVERY` steps under torch.distributed, where only rank 0 stores the run
            and feeds the sinks (the statistics are of the whole job; see :mod:`gradprobe.distributed`).
        budget: the probe's largest share of wall time when ``every`` is None.
        store: run store directory (default ``$GRADPROBE_STORE`` or ``./gradprobe-runs``); False: keep in memory.
        run_id: the stored run's id (default: a fresh one from ``experiment``).
        experiment: the experiment name in the run's meta and id.
        config: what the run stores as its config (hyper-parameters and trainer settings).
        listeners: called with every flushed stats frame (a trainer's logger).
        sinks: RunSinks (MLflow, W&B, TensorBoard) fed every frame and metric, finished at :meth:`finish`.
        report: also write ``report.html`` for the run at :meth:`finish`.
        on_alert: called with each live alert (:mod:`gradprobe.alerts`) after it is stored in the run's
            ``alerts`` table; None: a ``GradprobeAlert`` warning.
        probe_kwargs: further :class:`Probe` arguments (``hist_every``, ``params``, ``modules``, ``scaler``, ...).
    """

    def __init__(self, model: nn.Module, *, every: int | Schedule | None = None, budget: float = CALLBACK_BUDGET,
                 store: str | Path | bool | None = None, run_id: str | None = None, experiment: str = "trainer",
                 config: dict[str, Any] | None = None, listeners: Sequence[StatsListener] = (),
                 report: bool = False, sinks: Sequence[RunSink] = (), on_alert: AlertCallback | None = None,
                 **probe_kwargs: Any) -> None:
        from gradprobe.distributed import current_world
        from gradprobe.store.layout import new_run_id
        from gradprobe.store.writer import RunWriter
        from gradprobe.train.env import environment

        world = current_world()
        self.lead = world is None or world.rank == 0  # the rank that stores, reports and logs the diagnosis
        self.listeners = list(listeners)
        self.sinks = list(sinks) if self.lead else []
        self.report = report
        self.writer = None
        if store is not False and self.lead:
            device = str(next(model.parameters()).device) if any(True for _ in model.parameters()) else "cpu"
            self.writer = RunWriter(None if store is True else store, run_id or new_run_id(experiment, None, None),
                                    config=_jsonable(config or {}), env=environment(device),
                                    meta={"experiment": experiment, "integration": experiment})
        if every is None and world is not None:
            every = DISTRIBUTED_EVERY
        cadence: dict[str, Any] = {"budget": budget} if every is None else {"every": every}
        self.on_alert = on_alert
        self.probe = Probe(model, drive="manual", sink=self._sink, on_alert=self._alert, **cadence, **probe_kwargs)
        self.model = model

    @property
    def run_id(self) -> str | None:
        """The stored run's id, None without a store."""
        return None if self.writer is None else self.writer.run_id

    def _sink(self, stats: pd.DataFrame, hists: pd.DataFrame) -> None:
        if self.writer is not None:
            self.writer.add_stats(stats)
            if len(hists):
                self.writer.add_hists(hists)
        for sink in self.sinks:
            sink.add_stats(stats)
            if len(hists):
                sink.add_hists(hists)
        for listener in self.listeners:
            listener(stats)

    def _alert(self, alert: Alert) -> None:
        if self.writer is not None:
            self.writer.add_alerts(alerts_frame([alert]))
        (self.on_alert or announce)(alert)

    def before_update(self) -> None:
        """The step's gradients are final: record what is due."""
        self.probe.before_update()

    def after_update(self) -> None:
        """The optimizer applied the step: record the update ratio and advance."""
        self.probe.after_update()

    def add_metrics(self, step: int, epoch: int, values: dict[str, float], split: str = R.TRAIN) -> None:
        """Store the trainer's own loss/accuracy for this step (``metrics`` table of the run)."""
        if (self.writer is not None or self.sinks) and values:
            rows = [(step, epoch, split, name, float(v)) for name, v in values.items()]
            self.add_metrics_frame(pd.DataFrame(rows, columns=list(R.METRIC_COLUMNS)))

    def add_metrics_frame(self, frame: pd.DataFrame) -> None:
        """Store many steps' metrics at once (columns :data:`records.METRIC_COLUMNS`): one write, not one per step."""
        for sink in ([self.writer] if self.writer is not None else []) + self.sinks:
            sink.add_metrics(frame)

    def finish(self, status: str = R.FINISHED, error: str | None = None) -> Any:
        """Detach the probe, store the run's summary, log the diagnosis (returned, or None) and write the report."""
        from gradprobe.diagnose.engine import diagnose
        from gradprobe.train.loop import frozen_layers

        self.probe.detach()
        weights = [n for n, p in self.model.named_parameters() if p.dim() >= 2]
        summary = {"weight_layers": weights, "frozen_layers": frozen_layers(self.model),
                   "structure": self.probe.structure, "steps": self.probe.step_count, "probe_cost": self.probe.cost,
                   "first_nonfinite": self.probe.first_nonfinite}
        if self.writer is not None:
            self.writer.finish(status, summary, error)
        for sink in self.sinks:
            sink.finish(status, summary, error)
        result = None
        if not self.lead:
            return result
        try:
            result = diagnose(self.probe)
            log.warning("gradprobe diagnosis%s:\n%s", f" of run {self.run_id}" if self.run_id else "", result)
        except GradprobeError as exc:
            log.warning("gradprobe: no diagnosis: %s", exc)
        if self.report and self.writer is not None:
            from gradprobe.report.html import write_report
            from gradprobe.store.reader import load_run

            page, _ = write_report([load_run(self.writer.run_id, self.writer.root)],
                                   self.writer.root / "reports" / self.writer.run_id)
            log.warning("gradprobe report: %s", page)
        return result


def _jsonable(value: Any) -> Any:
    """Hyper-parameters as JSON data: containers kept, everything else that JSON cannot hold as its repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


__all__ = ["CALLBACK_BUDGET", "DISTRIBUTED_EVERY", "ProbeSession", "StatsListener", "missing", "scalar_metrics"]

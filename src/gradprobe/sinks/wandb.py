"""Weights & Biases output: a RunSink that logs a run's statistics, histograms and metrics to a W&B run.

Each step's scalars are one ``run.log`` call keyed ``<kind>/<stat>/<layer>.<tensor>`` and
``metrics/<split>/<metric>``, histograms ``<kind>/hist/<layer>.<tensor>`` as ``wandb.Histogram``.
Every row carries the training step as ``gradprobe/step``, declared as the x axis of these keys
with ``define_metric``: the probe's frames and the evaluations arrive out of step order, which
``run.log(step=...)`` would drop.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from gradprobe import records as R
from gradprobe.sinks.base import hist_key, metric_rows, stat_rows, summary_scalars

_log = logging.getLogger(__name__)

__all__ = ["STEP_KEY", "WandbSink"]

STEP_KEY = "gradprobe/step"
_PREFIXES = (*R.KINDS, "metrics")  # the key families this sink logs, each plotted against STEP_KEY
_MAX_BINS = 512  # wandb.Histogram's limit


class WandbSink:
    """A RunSink that logs one gradprobe run to a W&B run.

    Args:
        project: W&B project (default: wandb's own, ``$WANDB_PROJECT``).
        run: log to this open run instead of starting one (it is left open at :meth:`finish`).
        init: further ``wandb.init`` arguments (``name``, ``group``, ``config``, ``mode``, ``dir``, ``tags``, ...).

    Raises:
        GradprobeError: if wandb is missing, with the install command.
    """

    def __init__(self, project: str | None = None, *, run: Any = None, **init: Any) -> None:
        try:
            import wandb
        except ImportError:
            from gradprobe.integrations.session import missing

            raise missing("wandb", "wandb") from None
        self._histogram = wandb.Histogram
        self._own = run is None
        self.run = run if run is not None else wandb.init(project=project, reinit="create_new", **init)
        self.run.define_metric(STEP_KEY, hidden=True)
        for prefix in _PREFIXES:
            self.run.define_metric(f"{prefix}/*", step_metric=STEP_KEY)
        _log.info("logging to W&B run %s", self.run.id)

    def _log(self, rows: dict[int, dict[str, Any]]) -> None:
        """One ``run.log`` per step, the step as ``gradprobe/step``."""
        for step, values in rows.items():
            self.run.log({STEP_KEY: step, **values})

    def add_stats(self, df: pd.DataFrame) -> None:
        """Log every row of a STAT_COLUMNS frame, one W&B row per step."""
        self._log(stat_rows(df))

    def add_hists(self, df: pd.DataFrame) -> None:
        """Log every row of a HIST_COLUMNS frame as a ``wandb.Histogram`` (rows without finite edges skipped)."""
        rows: dict[int, dict[str, Any]] = {}
        for step, layer, tensor, kind, edges, counts in df.loc[
            :, ["step", "layer", "tensor", "kind", "edges", "counts"]
        ].itertuples(index=False):
            edges, counts = np.asarray(edges, np.float64), np.asarray(counts, np.int64)
            if edges.size != counts.size + 1 or counts.size > _MAX_BINS or not np.isfinite(edges).all():
                _log.warning("skipping histogram %s.%s at step %s: no finite edges, or over 512 bins",
                             layer, tensor, step)
                continue
            rows.setdefault(int(step), {})[hist_key(kind, layer, tensor)] = self._histogram(
                np_histogram=(counts, edges))
        self._log(dict(sorted(rows.items())))

    def add_metrics(self, df: pd.DataFrame) -> None:
        """Log every row of a METRIC_COLUMNS frame as ``metrics/<split>/<metric>``."""
        self._log(metric_rows(df))

    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Put the summary's numbers and the status in the run summary; end the run if this sink started it."""
        extra = {"gradprobe/error": error} if error else {}
        self.run.summary.update({**summary_scalars(summary), "gradprobe/status": status, **extra})
        if self._own:
            self.run.finish(exit_code=0 if status == R.FINISHED else 1)

"""MLflow output: a RunSink that logs a run's statistics and metrics to one MLflow run.

Scalars go through ``MlflowClient.log_batch`` (synchronously, at most 1000 metrics a call) as
``<kind>/<stat>/<layer>.<tensor>`` and ``metrics/<split>/<metric>``, sanitised to the characters
MLflow allows on every platform. Histograms are skipped: MLflow has no histogram type, and the
report's histogram figures arrive as artifacts with :meth:`MLflowSink.add_report`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.sinks.base import Rows, metric_rows, stat_rows, summary_scalars

_log = logging.getLogger(__name__)

__all__ = ["MLflowSink", "mlflow_key", "mlflow_status", "tracking_uri"]

METRICS_PER_CALL = 1000  # MLflow's MAX_METRICS_PER_BATCH
PARAMS_PER_CALL = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH
_KEY_LENGTH, _PARAM_LENGTH, _TAG_LENGTH = 250, 6000, 8000
_STATUS = {R.FINISHED: "FINISHED", R.DIVERGED: "FAILED", R.FAILED: "FAILED", R.INTERRUPTED: "KILLED"}


def mlflow_key(key: str) -> str:
    """``key`` with what MLflow refuses replaced by ``_``: only ``[/\\w.\\- ]``, no empty, ``.`` or ``..`` part."""
    parts = [re.sub(r"[^/\w.\- ]", "_", part) for part in key.split("/")]
    return "/".join(p if p not in ("", ".", "..") else "_" for p in parts)[:_KEY_LENGTH]


def mlflow_status(status: str) -> str:
    """MLflow's terminal run status for a gradprobe status (diverged is FAILED; the tag keeps the word)."""
    return _STATUS.get(status, "FAILED")


def tracking_uri(uri: str | None) -> str | None:
    """A plain directory path as a ``file:`` URI; URIs (``sqlite:///...``, ``http://...``) and None unchanged."""
    if uri is None or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def _flat(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested config as ``{"a.b": "value"}`` params, each value cut to MLflow's 6000 characters."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[mlflow_key(prefix)] = str(value)[:_PARAM_LENGTH]
    return out


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class MLflowSink:
    """A RunSink that logs one gradprobe run as one MLflow run.

    Args:
        uri: tracking URI or directory (default: MLflow's own, ``$MLFLOW_TRACKING_URI``).
        experiment: MLflow experiment name, created if missing.
        run_name: the MLflow run's name (e.g. the gradprobe run id).
        params: the run's config, logged flattened as params (``optimizer.lr``, ...).
        tags: extra run tags.
        clock: seconds since the epoch, for metric timestamps.

    Raises:
        GradprobeError: if MLflow is missing (with the install command) or the store cannot be opened.
    """

    def __init__(self, uri: str | None = None, experiment: str = "gradprobe", run_name: str | None = None, *,
                 params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric, Param
            from mlflow.exceptions import MlflowException
        except ImportError:
            from gradprobe.integrations.session import missing

            raise missing("MLflow", "mlflow") from None
        self._metric, self._clock = Metric, clock
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri(uri))
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run_id: str = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        except MlflowException as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GradprobeError(f"--mlflow: cannot open the tracking store {uri!r}: {reason}") from None
        for chunk in _chunks([Param(k, v) for k, v in _flat("", params or {}, {}).items()], PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=chunk)
        _log.info("logging to MLflow run %s at %s", self.run_id, self.client.tracking_uri)

    def _log(self, rows: Rows) -> None:
        """Log every ``{step: {key: value}}`` entry, at most 1000 metrics a call."""
        stamp = int(self._clock() * 1000)
        metrics = [self._metric(mlflow_key(key), value, stamp, step)
                   for step, values in rows.items() for key, value in values.items()]
        for chunk in _chunks(metrics, METRICS_PER_CALL):
            # Synchronous: MLflow's async queue races on its own file store (two batches creating one
            # metric directory fail with 'File exists'), and a lost batch would be a silent gap.
            self.client.log_batch(self.run_id, metrics=chunk)

    def add_stats(self, df: pd.DataFrame) -> None:
        """Log every row of a STAT_COLUMNS frame as ``<kind>/<stat>/<layer>.<tensor>`` at its step."""
        self._log(stat_rows(df))

    def add_hists(self, df: pd.DataFrame) -> None:
        """Skip histograms: MLflow has no histogram type (the report's figures come as artifacts)."""

    def add_metrics(self, df: pd.DataFrame) -> None:
        """Log every row of a METRIC_COLUMNS frame as ``metrics/<split>/<metric>``."""
        self._log(metric_rows(df))

    def add_report(self, folder: str | Path) -> None:
        """Log a report folder (``report.html`` and its figures) as the run's ``report`` artifacts."""
        if Path(folder).is_dir():
            self.client.log_artifacts(self.run_id, str(folder), artifact_path="report")

    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Log the summary's numbers and the status, and end the MLflow run."""
        self._log({int((summary or {}).get("steps") or 0): summary_scalars(summary)})
        self.client.set_tag(self.run_id, "gradprobe.status", status)
        if error:
            self.client.set_tag(self.run_id, "gradprobe.error", error[:_TAG_LENGTH])
        self.client.set_terminated(self.run_id, mlflow_status(status))

"""Read runs back: ``load_run`` -> ``Run`` with tidy frames, ``list_runs`` for a table of runs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gradprobe.errors import GradprobeError
from gradprobe.records import KINDS
from gradprobe.store.layout import (
    COLUMNS,
    RUN_ID,
    RUN_JSON,
    SCHEMAS,
    parse_part_name,
    resolve_store,
    run_ids,
    validate_run_id,
)

_log = logging.getLogger(__name__)

RUN_COLUMNS = ("run_id", "experiment", "arm", "seed", "status", "created")

__all__ = [
    "RUN_COLUMNS",
    "Run",
    "list_runs",
    "load_run",
    "part_files",
    "read_run_docs",
    "runs_frame",
]

Selector = str | Sequence[str] | None


def _read_doc(path: Path) -> dict[str, Any]:
    """Return the parsed ``run.json`` of run directory ``path``.

    Raises:
        OSError, ValueError, TypeError: if it is missing, unreadable or not a JSON object.
    """
    doc = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise TypeError(f"{RUN_JSON} holds a {type(doc).__name__}, not an object")
    return doc


def _isin(column: str, wanted: Selector) -> pc.Expression | None:
    """Return a filter ``column in wanted`` (a single string counts as one value)."""
    if wanted is None:
        return None
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    return pc.field(column).isin(values)


def part_files(path: Path, kind: str) -> list[Path]:
    """Return the ``kind`` (stats/metrics/hists) part files of run dir ``path`` in write order.

    Anything else, in particular ``.tmp-*`` files of unfinished writes, is ignored.
    """
    found = []
    for entry in path.iterdir():
        parsed = parse_part_name(entry.name)
        if parsed and parsed[0] == kind:
            found.append((parsed[1], entry))
    return [p for _, p in sorted(found)]


class Run:
    """One stored run: its ``run.json`` fields as attributes and its records as tidy frames."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the run directory ``path``.

        Raises:
            GradprobeError: if its ``run.json`` is missing or unreadable.
        """
        self.path = Path(path)
        try:
            doc = _read_doc(self.path)
        except (OSError, ValueError, TypeError) as exc:
            raise GradprobeError(
                f"run: {self.path.name!r} has no readable {RUN_JSON} ({exc})"
            ) from None
        self.run_id: str = self.path.name  # the directory is authoritative
        self.config: dict[str, Any] = doc.get("config") or {}
        self.env: dict[str, Any] = doc.get("env") or {}
        self.meta: dict[str, Any] = doc.get("meta") or {}
        self.status: str = str(doc.get("status"))
        self.summary: dict[str, Any] = doc.get("summary") or {}
        self.error: str | None = doc.get("error")

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, status={self.status!r})"

    def _read(self, kind: str, filters: pc.Expression | None = None) -> pd.DataFrame:
        """Read every part of ``kind`` as one frame in the record columns, stably sorted by step."""
        columns = list(COLUMNS[kind])
        tables = [
            pq.read_table(p, columns=columns, filters=filters) for p in part_files(self.path, kind)
        ]
        if tables:
            table = pa.concat_tables(tables)
        else:
            table = SCHEMAS[kind].remove(SCHEMAS[kind].get_field_index(RUN_ID)).empty_table()
        frame = table.to_pandas()
        frame["step"] = frame["step"].astype(np.int64)
        return frame.sort_values("step", kind="stable", ignore_index=True)

    def frame(
        self, kind: Selector = None, stat: Selector = None, layer: Selector = None
    ) -> pd.DataFrame:
        """Return the statistics, optionally filtered, as STAT_COLUMNS.

        Args:
            kind: one kind or several (see ``records.KINDS``); None for all.
            stat: one stat name or several; None for all.
            layer: one layer path or several; None for all.

        Returns:
            Frame ``step`` (int64), ``layer``, ``tensor``, ``kind``, ``stat`` (str), ``value``
            (float64 widened from the stored float32), sorted by step then write order.

        Raises:
            GradprobeError: if ``kind`` names something that is not a kind.
        """
        for k in [kind] if isinstance(kind, str) else kind or []:
            if k not in KINDS:
                raise GradprobeError(
                    f"kind: {k!r} is not a record kind; use one of {', '.join(KINDS)}"
                )
        filters = None
        for expr in (_isin("kind", kind), _isin("stat", stat), _isin("layer", layer)):
            if expr is not None:
                filters = expr if filters is None else filters & expr
        frame = self._read("stats", filters)
        frame["value"] = frame["value"].astype(np.float64)
        return frame

    def metrics(self) -> pd.DataFrame:
        """Return the metrics as METRIC_COLUMNS (step, epoch int64; value float64) by step."""
        frame = self._read("metrics")
        frame["epoch"] = frame["epoch"].astype(np.int64)
        return frame

    def hists(self) -> pd.DataFrame:
        """Return the histograms as HIST_COLUMNS, one array per row in ``edges`` and ``counts``.

        Returns:
            Frame sorted by step; ``edges`` float64 arrays (n + 1,), ``counts`` int64 arrays (n,).
        """
        frame = self._read("hists")
        frame["edges"] = [None if e is None else np.asarray(e, np.float64) for e in frame["edges"]]
        frame["counts"] = [None if c is None else np.asarray(c, np.int64) for c in frame["counts"]]
        return frame


def _not_found(run_id: str, root: Path) -> GradprobeError:
    return GradprobeError(f"run: {run_id!r} not found in store {root}; see 'gradprobe ls'")


def load_run(run_id: str, store: str | os.PathLike[str] | None = None) -> Run:
    """Open a run by its id or by a unique prefix of it.

    Raises:
        GradprobeError: if the id is invalid, absent, or a prefix of several runs.
    """
    root = resolve_store(store)
    validate_run_id(run_id)
    ids = run_ids(root)
    if run_id in ids:
        return Run(root / "runs" / run_id)
    matches = [i for i in ids if i.startswith(run_id)]
    if not matches:
        raise _not_found(run_id, root)
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (
            f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        )
        raise GradprobeError(
            f"run: {run_id!r} is ambiguous in store {root}: it matches {shown}; "
            "give more characters"
        )
    return Run(root / "runs" / matches[0])


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Flatten nested dicts into ``out`` with dotted keys."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    else:
        out[prefix] = value


def _run_row(run_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Return the ``list_runs`` row of one ``run.json``."""
    meta = doc.get("meta") or {}
    row: dict[str, Any] = {"run_id": run_id, "status": doc.get("status")}
    row.update({k: meta.get(k) for k in ("experiment", "arm", "seed", "created")})
    _flatten("summary", doc.get("summary") or {}, row)
    return row


def read_run_docs(store: str | os.PathLike[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Return ``(run_id, run.json)`` of each readable run; unreadable ones are logged, skipped."""
    root = resolve_store(store)
    docs = []
    for run_id in run_ids(root):
        try:
            docs.append((run_id, _read_doc(root / "runs" / run_id)))
        except FileNotFoundError:  # a run directory is created a moment before its run.json
            _log.debug("skipping run %s in store %s: no %s yet", run_id, root, RUN_JSON)
        except (OSError, ValueError, TypeError) as exc:
            _log.warning(
                "skipping run %s in store %s: unreadable %s (%s)", run_id, root, RUN_JSON, exc
            )
    return docs


def _seed_column(seeds: pd.Series) -> pd.Series:
    """Return seeds as nullable Int64; anything that is not a whole number becomes NA."""
    numbers = pd.to_numeric(seeds, errors="coerce").astype("float64")
    numbers = numbers.where(numbers.notna() & (numbers % 1 == 0))
    return numbers.astype("Int64")


def list_runs(store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Return one row per run: RUN_COLUMNS then ``summary.<key>`` columns, sorted by created.

    ``seed`` is a nullable integer column; nested summary dicts are flattened with dots.
    """
    return runs_frame(read_run_docs(store))


def runs_frame(docs: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """Return the ``list_runs`` table of ``(run_id, run.json)`` pairs."""
    rows = [_run_row(run_id, doc) for run_id, doc in docs]
    frame = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    summary_cols = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    frame = frame.reindex(columns=[*RUN_COLUMNS, *summary_cols])
    frame["seed"] = _seed_column(frame["seed"])
    frame["_created"] = frame["created"].astype("string").fillna("")
    frame = frame.sort_values(["_created", "run_id"], kind="stable", ignore_index=True)
    return frame.drop(columns="_created")

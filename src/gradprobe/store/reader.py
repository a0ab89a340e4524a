"""Read runs back: ``load_run`` -> ``Run`` with tidy frames, ``list_runs`` for a table of runs.

Only the stdlib is imported at module level: listing runs (``run_rows``) reads ``run.json`` files
alone, and pyarrow, NumPy and pandas are imported where parts are read or frames built, so the
commands that only look at a store start fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradprobe.errors import GradprobeError
from gradprobe.records import KINDS
from gradprobe.store.layout import (
    COLUMNS,
    RUN_ID,
    RUN_JSON,
    parse_part_name,
    resolve_store,
    run_ids,
    validate_run_id,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_log = logging.getLogger(__name__)

RUN_COLUMNS = ("run_id", "experiment", "arm", "seed", "status", "created")

__all__ = [
    "RUN_COLUMNS",
    "Run",
    "list_runs",
    "load_run",
    "part_files",
    "read_run_docs",
    "run_rows",
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


def _mask(table: pa.Table, column: str, wanted: Selector) -> pa.ChunkedArray | None:
    """Return the rows of ``table`` whose ``column`` is in ``wanted`` (one string counts as one value).

    The values are compared as scalars taken from the column itself: converting Python values
    to Arrow (``pa.array``, ``pa.scalar``) would import pandas.
    """
    if wanted is None:
        return None
    import pyarrow.compute as pc

    values = {wanted} if isinstance(wanted, str) else set(wanted)
    present = pc.unique(table[column])
    mask = pc.is_null(table[column])  # all false: the columns hold no nulls
    for i, value in enumerate(present.to_pylist()):
        if value in values:
            mask = pc.or_(mask, pc.equal(table[column], present[i]))
    return mask


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

    def table(
        self, kind: str, stat: Selector = None, layer: Selector = None, record_kind: Selector = None
    ) -> pa.Table:
        """Return every part of ``kind`` (stats/metrics/hists) as one Arrow table, stably sorted by step.

        ``stat``, ``layer`` and ``record_kind`` (the ``kind`` column of stats and hists) keep only
        the rows whose column is among the given values. No pandas: ``gradprobe show`` reads this.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        columns = list(COLUMNS[kind])
        # ParquetFile.read, not read_table: read_table's dataset layer imports pandas.
        tables = [pq.ParquetFile(p).read(columns=columns) for p in part_files(self.path, kind)]
        if tables:
            table = pa.concat_tables(tables)
        else:
            from gradprobe.store.schemas import SCHEMAS

            table = SCHEMAS[kind].remove(SCHEMAS[kind].get_field_index(RUN_ID)).empty_table()
        keep = None
        for column, wanted in (("kind", record_kind), ("stat", stat), ("layer", layer)):
            mask = _mask(table, column, wanted)
            if mask is not None:
                keep = mask if keep is None else pc.and_(keep, mask)
        if keep is not None:
            table = table.filter(keep)
        return table.take(pc.sort_indices(table, [("step", "ascending")]))  # a stable sort

    def _read(self, kind: str, stat: Selector = None, layer: Selector = None,
              record_kind: Selector = None) -> pd.DataFrame:
        """Read every part of ``kind`` as one frame in the record columns, stably sorted by step."""
        import numpy as np

        frame = self.table(kind, stat, layer, record_kind).to_pandas()
        frame["step"] = frame["step"].astype(np.int64)
        return frame

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
        frame = self._read("stats", stat, layer, kind)
        frame["value"] = frame["value"].astype("float64")
        return frame

    def metrics(self) -> pd.DataFrame:
        """Return the metrics as METRIC_COLUMNS (step, epoch int64; value float64) by step."""
        frame = self._read("metrics")
        frame["epoch"] = frame["epoch"].astype("int64")
        return frame

    def hists(self) -> pd.DataFrame:
        """Return the histograms as HIST_COLUMNS, one array per row in ``edges`` and ``counts``.

        Returns:
            Frame sorted by step; ``edges`` float64 arrays (n + 1,), ``counts`` int64 arrays (n,).
        """
        import numpy as np

        frame = self._read("hists")
        frame["edges"] = [None if e is None else np.asarray(e, np.float64) for e in frame["edges"]]
        frame["counts"] = [None if c is None else np.asarray(c, np.int64) for c in frame["counts"]]
        return frame


    def alerts(self) -> pd.DataFrame:
        """Return the live alerts as ALERT_COLUMNS (step int64, ..., value float64) by step; empty if none.

        Runs stored before alerts existed, or without any, have none.
        """
        return self._read("alerts")

    def units(self) -> pd.DataFrame:
        """Per-unit death and saturation (UNIT_COLUMNS, see :mod:`gradprobe.units`): the last snapshot written.

        Steps are int64 with -1 for none and <NA> where the unit's family has no dead region; empty if none.
        """
        import pyarrow.parquet as pq

        from gradprobe.store.schemas import SCHEMAS

        last = part_files(self.path, "units")[-1:]  # each part is a whole snapshot
        table = pq.ParquetFile(last[0]).read(columns=list(COLUMNS["units"])) if last else SCHEMAS["units"].remove(
            SCHEMAS["units"].get_field_index(RUN_ID)).empty_table()
        frame = table.to_pandas()
        ints = ["unit", "last_fired", "dead_since", "first_dead", "observed_steps", "last_observed"]
        return frame.astype({c: "Int64" for c in ints} | {"saturated_frac": "float64"})


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


def _whole_number(value: Any) -> int | None:
    """Return a seed as an int; anything that is not a whole number (or the text of one) is None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number % 1 == 0 else None


def run_rows(docs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Return the ``list_runs`` rows of ``(run_id, run.json)`` pairs as dicts, sorted by created then id.

    ``seed`` is an int or None; nested summary dicts are flattened with dots; a summary key
    that a run lacks is absent from its dict. No pandas: ``gradprobe ls`` prints these.
    """
    rows = [_run_row(run_id, doc) for run_id, doc in docs]
    for row in rows:
        row["seed"] = _whole_number(row["seed"])
    return sorted(rows, key=lambda r: ("" if r["created"] is None else str(r["created"]), r["run_id"]))


def list_runs(store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Return one row per run: RUN_COLUMNS then ``summary.<key>`` columns, sorted by created.

    ``seed`` is a nullable integer column; nested summary dicts are flattened with dots.
    """
    return runs_frame(read_run_docs(store))


def runs_frame(docs: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """Return the ``list_runs`` table of ``(run_id, run.json)`` pairs."""
    import pandas as pd

    rows = run_rows(docs)
    frame = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    summary_cols = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    frame = frame.reindex(columns=[*RUN_COLUMNS, *summary_cols])
    frame["seed"] = pd.array([r["seed"] for r in rows], dtype="Int64")
    return frame

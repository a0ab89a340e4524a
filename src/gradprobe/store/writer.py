"""RunWriter: buffer tidy frames of one run and flush them as atomic Parquet parts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from gradprobe.errors import GradprobeError
from gradprobe.records import FAILED, FINISHED, INTERRUPTED, RUNNING, STATUSES
from gradprobe.store.atomic import atomic_write_json, atomic_write_parquet, to_json
from gradprobe.store.layout import (
    BYTE_STREAM_SPLIT,
    COLUMNS,
    DICTIONARY,
    PART_KINDS,
    RUN_ID,
    RUN_JSON,
    TMP_PREFIX,
    parse_part_name,
    part_name,
    resolve_store,
    run_dir,
    validate_run_id,
)
from gradprobe.store.schemas import SCHEMAS

if TYPE_CHECKING:
    from typing_extensions import Self

_log = logging.getLogger(__name__)

__all__ = ["RunWriter", "is_being_written", "to_table"]


def to_table(kind: str, frame: pd.DataFrame, run_id: str) -> pa.Table:
    """Check that ``frame`` has exactly the ``kind`` columns and convert it to its Arrow schema.

    Args:
        kind: ``stats``, ``metrics`` or ``hists``.
        frame: tidy frame with the columns of :mod:`gradprobe.records`, in any order.
        run_id: stored in a ``run_id`` column so SQL can join runs.

    Returns:
        A table with the ``kind`` schema (schema column order, no pandas metadata).

    Raises:
        ValueError: on missing/extra columns or values that do not fit the column type.
        TypeError: if ``frame`` is not a DataFrame.
    """
    expected = COLUMNS[kind]
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{kind}: expected a pandas DataFrame, got {type(frame).__name__}")
    got = [str(c) for c in frame.columns]
    if sorted(got) != sorted(expected):
        missing = [c for c in expected if c not in got]
        extra = [c for c in got if c not in expected]
        raise ValueError(
            f"{kind}: columns must be {list(expected)}; missing {missing}, unexpected {extra}"
        )
    data = frame.loc[:, list(expected)].assign(**{RUN_ID: run_id})
    try:
        table = pa.Table.from_pandas(data, schema=SCHEMAS[kind], preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{kind}: {exc.args[0] if exc.args else exc}") from exc
    return table.replace_schema_metadata(None)


def _owner() -> dict[str, Any]:
    """Which process writes a run, so resuming can refuse a run that is still being written."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def is_being_written(meta: dict[str, Any]) -> bool:
    """Whether another live process on this host is writing the run whose ``meta`` this is."""
    pid = meta.get("pid")
    if meta.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _now(clock: Callable[[], float]) -> str:
    """Return ``clock()`` as an ISO-8601 UTC stamp with milliseconds (sorts as text)."""
    return datetime.fromtimestamp(clock(), timezone.utc).isoformat(timespec="milliseconds")


class RunWriter:
    """Write one run: ``run.json`` plus ``stats-/metrics-/hists-NNNNNN.parquet`` parts.

    As a context manager, a clean exit finishes the run; an exception marks it ``failed``
    (KeyboardInterrupt: ``interrupted``), flushes what was buffered and re-raises.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        run_id: str,
        *,
        config: dict[str, Any],
        env: dict[str, Any],
        meta: dict[str, Any],
        flush_rows: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the run directory (it must not exist) and write ``run.json`` with status running.

        ``meta`` gains the creation time and the writing process (pid, host).

        Raises:
            GradprobeError: if the run id is invalid or the run already exists.
        """
        self._init(root, run_id, flush_rows)
        self._doc: dict[str, Any] = {
            "run_id": run_id,
            "status": RUNNING,
            "config": dict(config),
            "env": dict(env),
            "meta": {"created": _now(clock), **meta, **_owner()},
            "summary": {},
            "error": None,
        }
        to_json(self._doc)  # fail on unserialisable config before creating anything
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.makedirs(self.path, exist_ok=False)
        except FileExistsError:
            raise GradprobeError(
                f"run: {run_id!r} already exists in store {self.root}; "
                "pick a new run id or resume it"
            ) from None
        self._write_json()

    def _init(self, root: str | os.PathLike[str] | None, run_id: str, flush_rows: int) -> None:
        """Set the fields shared by ``__init__`` and ``resume``."""
        if flush_rows < 1:
            raise GradprobeError(f"flush_rows: {flush_rows!r} must be a positive integer")
        self.root = resolve_store(root)
        self.run_id = validate_run_id(run_id)
        self.path: Path = run_dir(run_id, self.root)
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[pa.Table]] = {k: [] for k in PART_KINDS}
        self._rows: dict[str, int] = dict.fromkeys(PART_KINDS, 0)
        self._parts: dict[str, int] = dict.fromkeys(PART_KINDS, 0)

    @classmethod
    def resume(
        cls, root: str | os.PathLike[str] | None, run_id: str, *, flush_rows: int = 200_000
    ) -> RunWriter:
        """Reopen an existing run: status back to running, this process its writer, part numbering continued.

        Raises:
            GradprobeError: if the run or its ``run.json`` is missing or unreadable.
        """
        self = cls.__new__(cls)
        self._init(root, run_id, flush_rows)
        try:
            self._doc = json.loads((self.path / RUN_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GradprobeError(
                f"run: {run_id!r} cannot be resumed from store {self.root} ({exc}); "
                "see 'gradprobe ls'"
            ) from None
        for entry in self.path.iterdir():
            parsed = parse_part_name(entry.name)
            if parsed:
                self._parts[parsed[0]] = max(self._parts[parsed[0]], parsed[1])
            elif entry.name.startswith(TMP_PREFIX):  # debris of the killed writer
                with contextlib.suppress(OSError):
                    entry.unlink()
        self._doc.update(status=RUNNING, error=None)
        self._doc.setdefault("meta", {}).update(_owner())
        self._write_json()
        return self

    @property
    def status(self) -> str:
        """Current status as written in ``run.json``."""
        return str(self._doc["status"])

    @property
    def summary(self) -> dict[str, Any]:
        """A copy of the summary so far."""
        return dict(self._doc["summary"])

    def _write_json(self) -> None:
        atomic_write_json(self.path / RUN_JSON, self._doc)

    def _add(self, kind: str, frame: pd.DataFrame) -> None:
        table = to_table(kind, frame, self.run_id)
        if table.num_rows == 0:
            return
        self._buffers[kind].append(table)
        self._rows[kind] += table.num_rows
        if self._rows[kind] > self.flush_rows:
            self._flush_kind(kind)

    def add_stats(self, df: pd.DataFrame) -> None:
        """Buffer a frame with exactly the STAT_COLUMNS (values will be stored as float32)."""
        self._add("stats", df)

    def add_metrics(self, df: pd.DataFrame) -> None:
        """Buffer a frame with exactly the METRIC_COLUMNS."""
        self._add("metrics", df)

    def add_hists(self, df: pd.DataFrame) -> None:
        """Buffer a frame with exactly the HIST_COLUMNS (edges, counts: one array per row)."""
        self._add("hists", df)

    def add_alerts(self, df: pd.DataFrame) -> None:
        """Buffer a frame with exactly the ALERT_COLUMNS (``gradprobe.alerts.alerts_frame``)."""
        self._add("alerts", df)

    def add_units(self, df: pd.DataFrame) -> None:
        """Replace the buffered per-unit snapshot with ``df`` (UNIT_COLUMNS, ``gradprobe.units``); last part wins."""
        table = to_table("units", df, self.run_id)
        self._buffers["units"], self._rows["units"] = [table], table.num_rows

    def _flush_kind(self, kind: str) -> None:
        if not self._buffers[kind]:
            return
        table = pa.concat_tables(self._buffers[kind])
        self._parts[kind] += 1
        atomic_write_parquet(
            self.path / part_name(kind, self._parts[kind]),
            table,
            dictionary=DICTIONARY[kind],
            byte_stream_split=BYTE_STREAM_SPLIT[kind],
        )
        self._buffers[kind].clear()
        self._rows[kind] = 0

    def flush(self) -> None:
        """Write one new part file per non-empty buffer."""
        for kind in PART_KINDS:
            self._flush_kind(kind)

    def set_summary(self, **kv: Any) -> None:
        """Merge ``kv`` into the summary and rewrite ``run.json``."""
        self._doc["summary"].update(kv)
        self._write_json()

    def update_meta(self, **kv: Any) -> None:
        """Merge ``kv`` into the meta block and rewrite ``run.json``."""
        self._doc["meta"].update(kv)
        self._write_json()

    def finish(
        self, status: str, summary: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Flush, then record final ``status``, merged ``summary`` and ``error`` in ``run.json``.

        Raises:
            GradprobeError: if ``status`` is not one of STATUSES.
        """
        if status not in STATUSES:
            raise GradprobeError(
                f"status: {status!r} is not a run status; use one of {', '.join(STATUSES)}"
            )
        self.flush()
        self._doc["summary"].update(summary or {})
        self._doc.update(status=status, error=error)
        self._write_json()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if self.status == RUNNING:
                self.finish(FINISHED)
            else:
                self.flush()
            return
        status = INTERRUPTED if issubclass(exc_type, KeyboardInterrupt) else FAILED
        try:
            self.finish(status, error=f"{exc_type.__name__}: {exc}")
        except Exception:  # noqa: BLE001  # never mask the original exception
            _log.exception("could not record status %s for run %s", status, self.run_id)

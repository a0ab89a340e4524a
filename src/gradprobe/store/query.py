"""Read-only SQL over a store with DuckDB: tables ``runs``, ``stats``, ``metrics``, ``hists``, ``alerts``, ``units``.

Two locks keep a query from touching anything: only a single SELECT statement is accepted,
and after the views are defined the connection disables file access outside the store's
``runs/`` directory (``enable_external_access=false``) and locks its configuration.
DuckDB, pyarrow and pandas are imported on the first query, not with the module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from gradprobe.errors import GradprobeError
from gradprobe.store.layout import COLUMNS, PART_KINDS, RUN_ID, RUNS_DIR, resolve_store
from gradprobe.store.reader import RUN_COLUMNS, part_files, read_run_docs, runs_frame

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["query"]

# DuckDB's name of each Arrow type in the part schemas.
_SQL_TYPES = {
    "int32": "INTEGER",
    "float": "FLOAT",
    "double": "DOUBLE",
    "string": "VARCHAR",
    "list<item: float>": "FLOAT[]",
    "list<item: int64>": "BIGINT[]",
}


def _quote(text: str) -> str:
    """Return ``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _runs_frame(root: Path) -> pd.DataFrame:
    """Return the ``runs`` table: RUN_COLUMNS plus ``config`` and ``summary`` as JSON text."""
    from gradprobe.store.atomic import to_json

    docs = read_run_docs(root)
    frame = runs_frame(docs).loc[:, list(RUN_COLUMNS)]
    by_id = dict(docs)
    for col in ("config", "summary"):
        frame[col] = [to_json(by_id[r].get(col) or {}, strict=True) for r in frame["run_id"]]
    for col in ("run_id", "experiment", "arm", "status", "created", "config", "summary"):
        frame[col] = frame[col].astype("string")
    return frame


def _view_sql(kind: str, files: list[Path]) -> str:
    """Return ``CREATE VIEW`` for one part kind: over its files, or empty with the right types."""
    columns = [*COLUMNS[kind], RUN_ID]
    if not files:
        from gradprobe.store.schemas import SCHEMAS

        schema = SCHEMAS[kind]
        casts = ", ".join(
            f"CAST(NULL AS {_SQL_TYPES[str(schema.field(c).type)]}) AS {c}" for c in columns
        )
        return f"CREATE VIEW {kind} AS SELECT {casts} WHERE false"
    listing = ", ".join(_quote(str(f)) for f in files)
    return (
        f"CREATE VIEW {kind} AS SELECT {', '.join(columns)} "
        f"FROM read_parquet([{listing}], union_by_name=true)"
    )


def _connect(root: Path) -> duckdb.DuckDBPyConnection:
    """Return an in-memory connection with the store's tables defined and file access locked."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.register("_runs_frame", _runs_frame(root))
    con.execute("CREATE TABLE runs AS SELECT * FROM _runs_frame")
    con.unregister("_runs_frame")
    files: dict[str, list[Path]] = {k: [] for k in PART_KINDS}
    for (run_id,) in con.execute("SELECT run_id FROM runs").fetchall():
        for kind in PART_KINDS:
            parts = part_files(root / RUNS_DIR / run_id, kind)
            files[kind].extend(parts[-1:] if kind == "units" else parts)  # units: each part a whole snapshot
    for kind in PART_KINDS:
        con.execute(_view_sql(kind, files[kind]))
    # Views are bound lazily, so reading the parts must stay allowed inside runs/ only.
    runs_dir = str(root / RUNS_DIR) + os.sep
    con.execute(f"SET allowed_directories=[{_quote(runs_dir)}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def query(sql: str, store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Run one read-only SELECT over the store and return its result.

    Tables: ``runs`` (run_id, experiment, arm, seed, status, created, config and summary as
    JSON text), ``stats`` (STAT_COLUMNS + run_id; value FLOAT), ``metrics``, ``hists`` and ``alerts``
    (step, layer, verdict, previous, message, value DOUBLE, run_id: the live alerts of ``gradprobe.alerts``),
    ``units`` (UNIT_COLUMNS + run_id: each run's last per-unit snapshot, see ``gradprobe.units``).

    Raises:
        GradprobeError: for anything but one SELECT statement, or when DuckDB rejects the SQL.
    """
    import duckdb

    root = resolve_store(store)
    try:
        statements = duckdb.connect(":memory:").extract_statements(sql)
    except duckdb.Error as exc:
        raise GradprobeError(f"query: {_first_line(exc)}") from None
    kinds = [s.type.name for s in statements]
    refused = [k for k in kinds if k != "SELECT"]
    if refused:
        raise GradprobeError(f"query: only SELECT statements are allowed (got {refused[0]})")
    if len(statements) != 1:
        raise GradprobeError(f"query: give exactly one SELECT statement (got {len(statements)})")
    con = _connect(root)
    try:
        return con.execute(statements[0]).df()
    except duckdb.Error as exc:
        raise GradprobeError(f"query: {_first_line(exc)}") from None
    finally:
        con.close()

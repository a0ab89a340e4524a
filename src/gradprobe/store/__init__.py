"""The only code that touches run directories: layout, atomic writes, writer, reader and SQL.

The names are imported from their modules on first use (PEP 562), so ``gradprobe ls`` and
``gradprobe show`` load neither pandas nor DuckDB (see :mod:`gradprobe.store.reader`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradprobe.lazy import export_lazily

if TYPE_CHECKING:
    from gradprobe.store.atomic import (
        atomic_path,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_parquet,
    )
    from gradprobe.store.layout import (
        checkpoint_path,
        new_run_id,
        resolve_store,
        run_dir,
        sanitize_run_id,
        validate_run_id,
    )
    from gradprobe.store.query import query
    from gradprobe.store.reader import Run, list_runs, load_run
    from gradprobe.store.writer import RunWriter

_PUBLIC = {
    "atomic_path": "gradprobe.store.atomic",
    "atomic_write_bytes": "gradprobe.store.atomic",
    "atomic_write_json": "gradprobe.store.atomic",
    "atomic_write_parquet": "gradprobe.store.atomic",
    "checkpoint_path": "gradprobe.store.layout",
    "new_run_id": "gradprobe.store.layout",
    "resolve_store": "gradprobe.store.layout",
    "run_dir": "gradprobe.store.layout",
    "sanitize_run_id": "gradprobe.store.layout",
    "validate_run_id": "gradprobe.store.layout",
    "query": "gradprobe.store.query",
    "Run": "gradprobe.store.reader",
    "list_runs": "gradprobe.store.reader",
    "load_run": "gradprobe.store.reader",
    "RunWriter": "gradprobe.store.writer",
}


export_lazily(__name__, _PUBLIC)


__all__ = [
    "Run",
    "RunWriter",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "checkpoint_path",
    "list_runs",
    "load_run",
    "new_run_id",
    "query",
    "resolve_store",
    "run_dir",
    "sanitize_run_id",
    "validate_run_id",
]

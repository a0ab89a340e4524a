"""The only code that touches run directories: layout, atomic writes, writer, reader and SQL."""

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

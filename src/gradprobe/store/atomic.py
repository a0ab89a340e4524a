"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader either sees the old file, the complete new file, or nothing: never a half-written
one, even after ``kill -9``. Temporary names start with ``.tmp-`` and readers skip dot names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradprobe.store.layout import TMP_PREFIX

_log = logging.getLogger(__name__)

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "to_json",
]


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing its directory (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is deleted and the
    exception propagates; ``path`` is left untouched.

    Args:
        path: final file path; its directory must exist.

    Yields:
        A path named ``.tmp-<name>-<random>`` in the same directory, to be written by the caller.
    """
    final = Path(path)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()


def _plain(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable (json's ``default`` hook)."""
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def _finite(value: Any) -> Any:
    """Replace NaN/Inf floats by None, recursively, so the text is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(obj: Any, *, strict: bool = False, indent: int | None = None) -> str:
    """Serialise ``obj``; ``strict`` turns NaN/Inf into null (for SQL), else they stay NaN."""
    if strict:
        obj = _finite(json.loads(json.dumps(obj, default=_plain)))
    return json.dumps(obj, default=_plain, indent=indent, sort_keys=True, allow_nan=not strict)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN/Inf kept so Python reads them back)."""
    atomic_write_bytes(path, (to_json(obj, indent=2) + "\n").encode("utf-8"))


def atomic_write_parquet(
    path: str | os.PathLike[str],
    table_or_frame: pa.Table | pd.DataFrame,
    *,
    dictionary: Sequence[str] | None = None,
    byte_stream_split: Sequence[str] = (),
) -> None:
    """Write a table as zstd Parquet atomically.

    Args:
        path: final ``.parquet`` path.
        table_or_frame: data; a DataFrame is converted without its index.
        dictionary: columns to dictionary-encode; None means every string column.
        byte_stream_split: float columns to store byte-stream-split (compresses
            real-valued data better).
    """
    table = table_or_frame
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if dictionary is None:
        dictionary = [f.name for f in table.schema if pa.types.is_string(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=list(dictionary),
            use_byte_stream_split=list(byte_stream_split) or False,
        )
    _log.debug("wrote %s (%d rows)", path, table.num_rows)

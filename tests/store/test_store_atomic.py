"""Atomic writes leave either the old file, the new file, or nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradprobe.store import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_parquet


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-")
        tmp.write_bytes(b"weights")
        assert not target.exists()
    assert target.read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_deletes_temp_on_exception(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise error()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_atomic_write_bytes_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_write_json_keeps_nan_and_numpy(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"loss": float("nan"), "n": np.int64(3), "p": tmp_path})
    back = json.loads(target.read_text())
    assert math.isnan(back["loss"]) and back["n"] == 3 and back["p"] == str(tmp_path)


def test_atomic_write_json_refuses_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(tmp_path / "x.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_parquet_frame(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": ["x", "y"], "b": [1.5, 2.5]})
    atomic_write_parquet(tmp_path / "t.parquet", frame)
    back = pq.read_table(tmp_path / "t.parquet").to_pandas()
    pd.testing.assert_frame_equal(back, frame)

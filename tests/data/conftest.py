"""Fixtures for the data tests: the shared real data sets and a hand-rolled IDX writer."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

IdxWriter = Callable[..., Path]

# IDX type codes written by hand, independent of gradprobe's table.
_TYPE_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as IDX: 0x0000, type code, ndim, big-endian u32 dims, big-endian data."""
    code = _TYPE_CODES[arr.dtype.kind + str(arr.dtype.itemsize)]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory with the real mnist/ and fashion-mnist/ files (env GRADPROBE_TEST_DATA)."""
    env = os.environ.get("GRADPROBE_TEST_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (path / "mnist" / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {path}; set GRADPROBE_TEST_DATA")
    return path


@pytest.fixture
def write_idx() -> IdxWriter:
    """Return ``write(path, array, gz=True)`` that writes ``array`` as an IDX file."""

    def write(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
        data = idx_bytes(arr)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        return path

    return write


@pytest.fixture
def fake_mnist(write_idx: IdxWriter) -> Callable[..., dict[str, Path]]:
    """Return ``make(dir, n_train=12, n_test=5, seed=0)`` writing four small MNIST-format files."""

    def make(directory: Path, n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, Path]:
        rng = np.random.default_rng(seed)
        arrays = {
            "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
            "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
        }
        return {name: write_idx(directory / name, arr) for name, arr in arrays.items()}

    return make


@pytest.fixture
def encode_idx() -> Callable[[np.ndarray], bytes]:
    """Return the hand-rolled IDX encoder ``idx_bytes``."""
    return idx_bytes

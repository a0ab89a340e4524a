"""IDX reader and MNIST loader: hand-written files, broken files and the real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradprobe.data import FASHION_MNIST_FILES, MNIST_FILES, file_md5, load_mnist, read_idx
from gradprobe.errors import GradprobeError

# Published facts about MNIST (LeCun et al.): digits 0..9 per split.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _raises_naming(path: Path, *words: str) -> pytest.ExceptionInfo[GradprobeError]:
    """Read ``path`` and check the one-line error names the file and contains ``words``."""
    with pytest.raises(GradprobeError) as info:
        read_idx(path)
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg
    for word in words:
        assert word in msg
    return info


# ---------------------------------------------------------------- hand-written files


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip_images_and_labels(tmp_path: Path, write_idx: Callable, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    got_images = read_idx(write_idx(tmp_path / f"img{suffix}", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / f"lbl{suffix}", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_header_bytes_written_by_hand(tmp_path: Path) -> None:
    """Spell out the format bytewise: magic 00 00 08 03, dims 2x3x2, then 12 pixels."""
    body = bytes(range(12))
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 2) + body)
    np.testing.assert_array_equal(read_idx(path), np.arange(12, dtype=np.uint8).reshape(2, 3, 2))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_round_trip_all_idx_types(
    tmp_path: Path, write_idx: Callable, arr: np.ndarray, gz: bool
) -> None:
    got = read_idx(write_idx(tmp_path / ("x.gz" if gz else "x"), arr, gz=gz))
    assert got.dtype == arr.dtype and got.dtype.isnative and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)  # NaNs compare equal here


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_body(tmp_path: Path, encode_idx: Callable, gz: bool) -> None:
    data = encode_idx(np.ones((3, 28, 28), dtype=np.uint8))[:-100]
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    _raises_naming(path, "truncated", "2352", "download")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00")
    _raises_naming(path, "truncated")


def test_trailing_data(tmp_path: Path, encode_idx: Callable) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(encode_idx(np.arange(5, dtype=np.uint8)) + b"extra"))
    _raises_naming(path, "more data")


def test_huge_header_in_small_file_is_rejected_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 2**31, 2**31, 28)))
    _raises_naming(path, "truncated")


@pytest.mark.parametrize(
    "magic",
    [b"\x12\x34\x08\x03", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"\x00\x01\x08\x03", b"\x00"],
)
def test_wrong_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(magic + struct.pack(">I", 1) + b"\x00"))
    _raises_naming(path, "magic number", magic[:4].hex())


def test_gz_name_with_garbage_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    _raises_naming(path, "not a gzip file")


def test_empty_gz_file(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"")
    _raises_naming(path, "not a gzip file")


def test_cut_gzip_stream(tmp_path: Path, encode_idx: Callable) -> None:
    rng = np.random.default_rng(1)
    blob = gzip.compress(encode_idx(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    _raises_naming(path, "gzip")


def test_gzip_crc_mismatch(tmp_path: Path, encode_idx: Callable) -> None:
    blob = bytearray(gzip.compress(encode_idx(np.zeros(10, dtype=np.uint8))))
    blob[-8] ^= 0xFF  # CRC32 trailer
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(blob))
    _raises_naming(path, "gzip")


def test_missing_file(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "nope-idx1-ubyte.gz", "not found")


# ---------------------------------------------------------------- md5


def test_file_md5_matches_hashlib_and_is_cached(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    stat = path.stat()
    assert file_md5(path) == hashlib.md5(b"abc" * 1000).hexdigest()
    # Same size, mtime and inode: the cached digest is returned without re-reading.
    with path.open("r+b") as f:
        f.write(b"xyz")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_md5(path) == hashlib.md5(b"abc" * 1000).hexdigest()
    # A different size (or mtime) invalidates the cache.
    path.write_bytes(b"new")
    assert file_md5(path) == hashlib.md5(b"new").hexdigest()


# ---------------------------------------------------------------- load_mnist on small files


@pytest.mark.parametrize("nested", [True, False])
def test_load_mnist_layouts(tmp_path: Path, fake_mnist: Callable, nested: bool) -> None:
    files = fake_mnist(tmp_path / "fashion-mnist" if nested else tmp_path, n_train=9, n_test=4)
    x_tr, y_tr, x_te, y_te = load_mnist("fashion-mnist", tmp_path, verify_md5=False)
    assert x_tr.shape == (9, 28, 28) and y_tr.shape == (9,)
    assert x_te.shape == (4, 28, 28) and y_te.shape == (4,)
    with gzip.open(files["t10k-images-idx3-ubyte.gz"]) as f:
        raw = f.read()
    assert struct.unpack(">IIII", raw[:16]) == (0x803, 4, 28, 28)
    assert x_te.tobytes() == raw[16:]


def test_load_mnist_md5_mismatch(tmp_path: Path, fake_mnist: Callable) -> None:
    files = fake_mnist(tmp_path / "mnist")
    path = files["train-images-idx3-ubyte.gz"]
    with pytest.raises(GradprobeError) as info:
        load_mnist("mnist", tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert MNIST_FILES[path.name] in msg
    assert hashlib.md5(path.read_bytes()).hexdigest() in msg
    assert "delete" in msg and "download" in msg


def test_load_mnist_missing_file(tmp_path: Path, fake_mnist: Callable) -> None:
    files = fake_mnist(tmp_path / "mnist")
    files["t10k-labels-idx1-ubyte.gz"].unlink()
    with pytest.raises(GradprobeError, match="t10k-labels-idx1-ubyte.gz.*not found"):
        load_mnist("mnist", tmp_path, verify_md5=False)


@pytest.mark.parametrize(
    ("name", "array", "words"),
    [
        (
            "train-images-idx3-ubyte.gz",
            np.zeros((12, 28, 27), np.uint8),
            ["28, 28", "(12, 28, 27)"],
        ),
        ("train-images-idx3-ubyte.gz", np.zeros((12, 784), np.uint8), ["(n, 28, 28)"]),
        ("t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.int16), ["uint8", "int16"]),
        ("train-labels-idx1-ubyte.gz", np.zeros((12, 1), np.uint8), ["(n,)"]),
        ("train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8), ["11 labels", "12 images"]),
        ("t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8), ["label 10", "0..9"]),
    ],
)
def test_load_mnist_wrong_role_shapes(
    tmp_path: Path,
    fake_mnist: Callable,
    write_idx: Callable,
    name: str,
    array: np.ndarray,
    words: list[str],
) -> None:
    fake_mnist(tmp_path / "mnist", n_train=12, n_test=5)
    write_idx(tmp_path / "mnist" / name, array)
    with pytest.raises(GradprobeError) as info:
        load_mnist("mnist", tmp_path, verify_md5=False)
    msg = str(info.value)
    assert name in msg and "\n" not in msg
    for word in words:
        assert word in msg


def test_load_mnist_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(GradprobeError, match="kind: 'kmnist'.*allowed: mnist, fashion-mnist"):
        load_mnist("kmnist", tmp_path)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the real files


def _independent_read(path: Path) -> tuple[tuple[int, ...], bytes]:
    """Read an IDX .gz with gzip + struct only: returns (dims, payload)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return dims, raw[4 + 4 * ndim :]


@pytest.fixture(scope="module")
def mnist(shared_data: Path) -> tuple[np.ndarray, ...]:
    """The real MNIST, loaded once with the MD5 check on."""
    return load_mnist("mnist", shared_data, verify_md5=True)


def test_real_mnist_shapes_and_labels(mnist: tuple[np.ndarray, ...], shared_data: Path) -> None:
    x_tr, y_tr, x_te, y_te = mnist
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    assert x_tr.dtype == y_tr.dtype == np.uint8
    assert y_tr.min() == 0 and y_tr.max() == 9
    for name, ours, published in [
        ("train-labels-idx1-ubyte.gz", y_tr, MNIST_TRAIN_COUNTS),
        ("t10k-labels-idx1-ubyte.gz", y_te, MNIST_TEST_COUNTS),
    ]:
        dims, payload = _independent_read(shared_data / "mnist" / name)
        counts = Counter(payload)
        assert dims == (len(ours),)
        assert [counts[d] for d in range(10)] == published
        assert np.bincount(ours, minlength=10).tolist() == published
        assert ours.tobytes() == payload


def test_real_mnist_pixels(mnist: tuple[np.ndarray, ...], shared_data: Path) -> None:
    x_tr, _, x_te, _ = mnist
    dims, payload = _independent_read(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert dims == (10000, 28, 28) and x_te.tobytes() == payload
    # The well-known normalisation constants of MNIST's training pixels: mean 0.1307, std 0.3081.
    flat = x_tr.ravel()  # exact integer moments, no 400 MB float copy
    total = int(flat.sum(dtype=np.int64))
    squares = int(np.einsum("i,i->", flat, flat, dtype=np.int64, casting="unsafe"))
    mean = total / flat.size / 255
    std = np.sqrt(squares / flat.size / 255**2 - mean**2)
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4


def test_real_md5s_match_table(shared_data: Path) -> None:
    for kind, table in [("mnist", MNIST_FILES), ("fashion-mnist", FASHION_MNIST_FILES)]:
        for name, md5 in table.items():
            path = shared_data / kind / name
            assert file_md5(path) == md5
    small = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.md5(small.read_bytes()).hexdigest() == MNIST_FILES[small.name]


def test_real_fashion_mnist(shared_data: Path) -> None:
    x_tr, y_tr, x_te, y_te = load_mnist("fashion-mnist", shared_data)
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6000 / 1000 examples of each of the 10 classes.
    assert np.bincount(y_tr).tolist() == [6000] * 10
    assert np.bincount(y_te).tolist() == [1000] * 10

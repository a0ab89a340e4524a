"""IDX reader and MNIST / Fashion-MNIST loader with MD5 checks."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np

from gradprobe.errors import GradprobeError

__all__ = [
    "FASHION_MNIST_FILES",
    "KIND_FILES",
    "MNIST_FILES",
    "MnistKind",
    "file_md5",
    "find_mnist_file",
    "load_mnist",
    "read_idx",
]

logger = logging.getLogger(__name__)

MnistKind = Literal["mnist", "fashion-mnist"]

# File name -> MD5 of the published .gz file; order: train images, train labels, test images,
# test labels.
MNIST_FILES: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
)
FASHION_MNIST_FILES: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
)
KIND_FILES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"mnist": MNIST_FILES, "fashion-mnist": FASHION_MNIST_FILES}
)

# IDX type code (magic byte 2) -> big-endian element type.
_IDX_TYPES: Mapping[int, np.dtype] = MappingProxyType(
    {
        0x08: np.dtype(">u1"),
        0x09: np.dtype(">i1"),
        0x0B: np.dtype(">i2"),
        0x0C: np.dtype(">i4"),
        0x0D: np.dtype(">f4"),
        0x0E: np.dtype(">f8"),
    }
)
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than ~1032:1
_CHUNK = 1 << 20
_REDOWNLOAD = "delete it and download it again (data.download=true)"

# (resolved path, size, mtime_ns, inode) -> md5 hex digest; avoids re-hashing on every load.
_md5_cache: dict[tuple[str, int, int, int], str] = {}


def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 hex digest of a file, cached in-process per (path, size, mtime, inode).

    Args:
        path: the file.

    Returns:
        32-character lowercase hex digest.

    Raises:
        OSError: the file cannot be read.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _md5_cache.get(key)
    if digest is None:
        h = hashlib.md5(usedforsecurity=False)
        with p.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = _md5_cache[key] = h.hexdigest()
    return digest


def _read_header(f: io.BufferedIOBase, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Parse the IDX magic number and dimensions.

    Args:
        f: stream positioned at the start of the (decompressed) IDX data.
        path: file name for messages.

    Returns:
        Big-endian element dtype and the shape.

    Raises:
        GradprobeError: bad magic number or truncated header.
    """
    magic = f.read(4)  # buffered streams return short reads only at end of file
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES or magic[3] == 0:
        raise GradprobeError(
            f"{path}: not an IDX file (magic number {magic.hex() or 'missing'}, expected "
            f"0000<type><ndim>, e.g. 00000803 for images, 00000801 for labels); {_REDOWNLOAD}"
        )
    ndim = magic[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise GradprobeError(f"{path}: truncated IDX header ({ndim} dimensions); {_REDOWNLOAD}")
    return _IDX_TYPES[magic[2]], struct.unpack(f">{ndim}I", raw_dims)


def _read_body(f: io.BufferedIOBase, path: Path, nbytes: int) -> np.ndarray:
    """Read exactly ``nbytes`` of data into a fresh writable buffer, then expect end of file.

    Args:
        f: stream positioned after the header.
        path: file name for messages.
        nbytes: bytes the header promises.

    Returns:
        uint8 array of ``nbytes`` bytes.

    Raises:
        GradprobeError: fewer or more bytes than the header says.
    """
    buf = np.empty(nbytes, dtype=np.uint8)
    view = buf.data  # writable memoryview over buf
    pos = 0
    while pos < nbytes:
        n = f.readinto(view[pos : pos + _CHUNK])
        if not n:
            raise GradprobeError(
                f"{path}: truncated: header promises {nbytes} data bytes, file has {pos}; "
                f"{_REDOWNLOAD}"
            )
        pos += n
    if f.read(1):
        raise GradprobeError(
            f"{path}: corrupt: more data than the header's {nbytes} bytes; {_REDOWNLOAD}"
        )
    return buf


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array.

    Args:
        path: the file; gzip is detected from its first bytes, and a ``.gz`` name requires it.

    Returns:
        Writable array with the header's shape, e.g. uint8 (60000, 28, 28) for MNIST images.

    Raises:
        GradprobeError: the file is missing, not gzip where expected, corrupt, has a bad magic
            number, or is truncated.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return _read_stream(gz, p, max_bytes=size * _MAX_DEFLATE_RATIO)
            if p.name.endswith(".gz"):
                raise GradprobeError(
                    f"{p}: not a gzip file (starts with {head.hex() or 'nothing'}, expected 1f8b); "
                    f"{_REDOWNLOAD}"
                )
            return _read_stream(raw, p, max_bytes=size)
    except FileNotFoundError:
        raise GradprobeError(f"{p}: file not found; check the path or download it") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise GradprobeError(f"{p}: corrupt or truncated gzip data ({exc}); {_REDOWNLOAD}") from exc
    except IsADirectoryError:
        raise GradprobeError(f"{p}: is a directory, expected an IDX file") from None
    except PermissionError:
        raise GradprobeError(f"{p}: permission denied; make the file readable") from None


def _read_stream(f: io.BufferedIOBase, path: Path, max_bytes: int) -> np.ndarray:
    """Read header and body from an open stream.

    Args:
        f: stream at the start of the IDX data.
        path: file name for messages.
        max_bytes: upper bound on the data size, to reject absurd headers before allocating.

    Returns:
        The array, native-endian.

    Raises:
        GradprobeError: bad header, truncated or overlong data.
    """
    dtype, shape = _read_header(f, path)
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a corrupt header cannot overflow
    if nbytes > max_bytes:
        raise GradprobeError(
            f"{path}: truncated: header promises {nbytes} data bytes for shape {shape}, "
            f"the file cannot hold that many; {_REDOWNLOAD}"
        )
    arr = _read_body(f, path, nbytes).view(dtype).reshape(shape)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def find_mnist_file(data_dir: str | os.PathLike[str], kind: MnistKind, name: str) -> Path | None:
    """Locate ``name`` as ``<data_dir>/<kind>/<name>`` or else ``<data_dir>/<name>``.

    Args:
        data_dir: root data directory.
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        name: file name, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The first existing candidate, or None.
    """
    root = Path(data_dir).expanduser()
    for candidate in (root / kind / name, root / name):
        if candidate.is_file():
            return candidate
    return None


def _check_md5(path: Path, expected: str) -> None:
    """Raise if the file's MD5 differs from ``expected``.

    Args:
        path: the file.
        expected: MD5 hex digest.

    Raises:
        GradprobeError: digests differ.
    """
    got = file_md5(path)
    if got != expected:
        raise GradprobeError(
            f"{path}: md5 mismatch: expected {expected}, got {got}; the file is corrupt or "
            f"not the published one: {_REDOWNLOAD}"
        )


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    """Check one images/labels pair has MNIST's dtypes, shapes and label range.

    Args:
        images: array read from ``img_path``.
        labels: array read from ``lbl_path``.
        img_path: images file, for messages.
        lbl_path: labels file, for messages.

    Raises:
        GradprobeError: wrong dtype, image size, counts or label values.
    """
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise GradprobeError(
            f"{img_path}: expected uint8 images of shape (n, 28, 28), got {images.dtype} "
            f"{images.shape}; is this an MNIST images file?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise GradprobeError(
            f"{lbl_path}: expected uint8 labels of shape (n,), got {labels.dtype} "
            f"{labels.shape}; is this an MNIST labels file?"
        )
    if len(labels) != len(images):
        raise GradprobeError(
            f"{lbl_path}: {len(labels)} labels but {img_path.name} has {len(images)} images; "
            f"the files do not belong together: {_REDOWNLOAD}"
        )
    if len(labels) and labels.max() > 9:
        raise GradprobeError(
            f"{lbl_path}: label {int(labels.max())} out of range; allowed: 0..9; {_REDOWNLOAD}"
        )


def load_mnist(
    kind: MnistKind, data_dir: str | os.PathLike[str], verify_md5: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from ``<data_dir>/<kind>/`` (or ``<data_dir>/``).

    Args:
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: root data directory holding the four ``.gz`` files.
        verify_md5: compare each file with the published MD5 first.

    Returns:
        ``x_train`` uint8 (60000, 28, 28), ``y_train`` uint8 (60000,),
        ``x_test`` uint8 (10000, 28, 28), ``y_test`` uint8 (10000,).

    Raises:
        GradprobeError: unknown kind, missing file, MD5 mismatch or malformed file.
    """
    if kind not in KIND_FILES:
        raise GradprobeError(f"kind: {kind!r} is not allowed; allowed: {', '.join(KIND_FILES)}")
    table = KIND_FILES[kind]
    paths: list[Path] = []
    for name, md5 in table.items():
        path = find_mnist_file(data_dir, kind, name)
        if path is None:
            root = Path(data_dir).expanduser()
            raise GradprobeError(
                f"{name}: {kind} file not found in {root / kind} or {root}; download it "
                f"(data.download=true) or point data.data_dir at the directory holding it"
            )
        if verify_md5:
            _check_md5(path, md5)
        paths.append(path)
    arrays = [read_idx(p) for p in paths]
    _check_pair(arrays[0], arrays[1], paths[0], paths[1])
    _check_pair(arrays[2], arrays[3], paths[2], paths[3])
    logger.debug("loaded %s from %s", kind, paths[0].parent)
    return arrays[0], arrays[1], arrays[2], arrays[3]

"""Turn a ``DataConfig`` into train/test tensors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradprobe.data.config import DATA_NAMES, DataConfig
from gradprobe.data.download import download
from gradprobe.data.idx import KIND_FILES, MnistKind, find_mnist_file, load_mnist
from gradprobe.data.synthetic import make_circles, make_moons, make_spiral, make_xor
from gradprobe.errors import GradprobeError

__all__ = ["DATA_ENV", "DEFAULT_DATA_DIR", "Dataset", "load_dataset", "resolve_data_dir"]

logger = logging.getLogger(__name__)

DATA_ENV = "GRADPROBE_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/gradprobe/data")
_DISPLAY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
# Salt so the split permutation is a different stream from the data generation with that seed.
_SPLIT_SALT = 0x5EED


@dataclass(frozen=True)
class Dataset:
    """A classification data set as tensors; test tensors are None when there is no split."""

    name: str
    x_train: torch.Tensor  # (n, d) float32
    y_train: torch.Tensor  # (n,) int64
    x_test: torch.Tensor | None  # (m, d) float32
    y_test: torch.Tensor | None  # (m,) int64
    n_classes: int

    @property
    def n_features(self) -> int:
        """Input dimension ``d`` (2 for toy sets, 64 for digits, 784 for MNIST)."""
        return int(self.x_train.shape[1])


def resolve_data_dir(data_dir: str | None) -> Path:
    """Pick the data directory: the argument, else env ``GRADPROBE_DATA``, else the cache.

    Args:
        data_dir: explicit directory (``DataConfig.data_dir``) or None.

    Returns:
        The directory, with ``~`` expanded; it need not exist.
    """
    chosen = data_dir or os.environ.get(DATA_ENV) or str(DEFAULT_DATA_DIR)
    return Path(chosen).expanduser()


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Shuffle with a seeded permutation and hold out ``test_fraction`` of the rows.

    Always shuffles, so that ``limit`` on class-ordered sets (spiral, digits) keeps every class.

    Args:
        x: features, shape (n, d).
        y: labels, shape (n,).
        test_fraction: 0 <= f < 1; when > 0 at least one row is held out.
        seed: data seed.

    Returns:
        ``x_train, y_train, x_test, y_test``; the test pair is None when ``test_fraction == 0``.
    """
    perm = np.random.default_rng([seed, _SPLIT_SALT]).permutation(len(y))  # (n,)
    if test_fraction <= 0:
        return x[perm], y[perm], None, None
    n_test = max(1, int(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def _synthetic(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Build a toy or digits set from the config.

    Args:
        cfg: data config with a non-MNIST name.

    Returns:
        ``x`` float32 (n, d), ``y`` int64 (n,) and the number of classes.

    Raises:
        GradprobeError: ``cfg.name`` is not a toy set or digits (only via ``model_construct``).
    """
    if cfg.name == "circles":
        return (*make_circles(cfg.n_samples, cfg.factor, cfg.noise, cfg.seed), 2)
    if cfg.name == "moons":
        return (*make_moons(cfg.n_samples, cfg.noise, cfg.seed), 2)
    if cfg.name == "xor":
        return (*make_xor(cfg.n_samples, cfg.noise, cfg.seed), 2)
    if cfg.name == "spiral":
        return (*make_spiral(cfg.n_per_class, cfg.n_classes, cfg.seed, cfg.generator), cfg.n_classes)
    if cfg.name != "digits":
        raise GradprobeError(
            f"data.name: {cfg.name!r} is not a data set; allowed: {', '.join(DATA_NAMES)}"
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (1797, 64), pixels 0..16 -> 0..1
    return x, digits.target.astype(np.int64), 10


def _mnist_dir(cfg: DataConfig, kind: MnistKind) -> Path:
    """Find the MNIST directory, downloading missing files when ``cfg.download`` is set.

    Args:
        cfg: data config with name mnist or fashion-mnist.
        kind: ``cfg.name``.

    Returns:
        Root directory that ``load_mnist`` reads.

    Raises:
        GradprobeError: files are missing and download is off, or the download fails.
    """
    root = resolve_data_dir(cfg.data_dir)
    missing = [n for n in KIND_FILES[kind] if find_mnist_file(root, kind, n) is None]
    if missing and cfg.download:
        download(kind, root)
    elif missing:
        files = "file " + missing[0] if len(missing) == 1 else "files " + ", ".join(missing)
        raise GradprobeError(
            f"data.data_dir: {_DISPLAY[kind]} {files} not found in {root / kind} or {root}; "
            f"pass --data-dir DIR, set {DATA_ENV}, or set data.download=true"
        )
    return root


def _mnist(
    cfg: DataConfig, kind: MnistKind
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load (Fashion-)MNIST as flattened float32 arrays.

    Args:
        cfg: data config with name mnist or fashion-mnist.
        kind: ``cfg.name``.

    Returns:
        ``x_train`` (n, 784), ``y_train`` (n,), ``x_test`` (10000, 784), ``y_test`` (10000,);
        pixels in 0..1 when ``cfg.normalize``, else 0..255; labels int64.

    Raises:
        GradprobeError: files are missing (and download is off) or invalid.
    """
    if cfg.test_fraction > 0:
        logger.info(
            "data.test_fraction=%s ignored: %s has its own test files", cfg.test_fraction, kind
        )
    x_tr, y_tr, x_te, y_te = load_mnist(kind, _mnist_dir(cfg, kind))
    x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]  # cut before converting, to save memory
    scale = np.float32(255.0 if cfg.normalize else 1.0)
    return (
        np.divide(x_tr.reshape(len(x_tr), -1), scale, dtype=np.float32),  # (n, 784)
        y_tr.astype(np.int64),
        np.divide(x_te.reshape(len(x_te), -1), scale, dtype=np.float32),  # (10000, 784)
        y_te.astype(np.int64),
    )


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the data set ``cfg.name`` with its split and limit applied.

    Args:
        cfg: validated data config.

    Returns:
        The data set; ``x_test``/``y_test`` are None for toy sets and digits with
        ``test_fraction == 0``.

    Raises:
        GradprobeError: MNIST files are missing (and download is off) or invalid.
    """
    x_te: np.ndarray | None
    y_te: np.ndarray | None
    if cfg.name in ("mnist", "fashion-mnist"):
        kind: MnistKind = "mnist" if cfg.name == "mnist" else "fashion-mnist"
        x_tr, y_tr, x_te, y_te = _mnist(cfg, kind)
        n_classes = 10
    else:
        x, y, n_classes = _synthetic(cfg)
        if cfg.generator == "cs231n" and cfg.test_fraction == 0 and cfg.limit is None:
            x_tr, y_tr, x_te, y_te = x, y, None, None  # the notebook's rows in its order
        else:
            x_tr, y_tr, x_te, y_te = _split(x, y, cfg.test_fraction, cfg.seed)
        x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]
    return Dataset(
        name=cfg.name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr)),
        x_test=None if x_te is None else torch.from_numpy(np.ascontiguousarray(x_te)),
        y_test=None if y_te is None else torch.from_numpy(np.ascontiguousarray(y_te)),
        n_classes=n_classes,
    )

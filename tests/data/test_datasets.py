"""load_dataset and DataConfig: dispatch, split, limit, data-dir resolution and MNIST."""

from __future__ import annotations

import dataclasses
import gzip
import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from sklearn.datasets import load_digits

from gradprobe.data import (
    DATA_NAMES,
    DataConfig,
    Dataset,
    load_dataset,
    make_circles,
    make_moons,
    make_spiral,
    make_xor,
    resolve_data_dir,
)
from gradprobe.errors import GradprobeError

datasets_mod = importlib.import_module("gradprobe.data.datasets")


def _rows(*arrays: np.ndarray | torch.Tensor | None) -> list[tuple[float, ...]]:
    """All rows of the given arrays as a sorted list: a multiset to compare sets of points."""
    parts = [np.asarray(a) for a in arrays if a is not None]
    return sorted(map(tuple, np.concatenate(parts).tolist()))


def _check_dataset(ds: Dataset, n_features: int, n_classes: int) -> None:
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.ndim == 2 and ds.x_train.shape == (len(ds.y_train), n_features)
    assert ds.n_features == n_features and ds.n_classes == n_classes
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) < n_classes
    if ds.x_test is not None:
        assert ds.y_test is not None and ds.x_test.dtype == torch.float32
        assert ds.x_test.shape == (len(ds.y_test), n_features)


def _test_split(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out tensors, which must be present."""
    assert ds.x_test is not None and ds.y_test is not None
    return ds.x_test, ds.y_test


# ---------------------------------------------------------------- config


def test_config_defaults() -> None:
    cfg = DataConfig()
    assert (cfg.name, cfg.n_samples, cfg.factor, cfg.noise) == ("circles", 1000, 0.5, 0.1)
    assert (cfg.n_per_class, cfg.n_classes, cfg.seed, cfg.test_fraction) == (100, 3, 0, 0.0)
    assert cfg.data_dir is None and cfg.download is False and cfg.limit is None and cfg.normalize
    assert DATA_NAMES == ("circles", "moons", "xor", "spiral", "digits", "mnist", "fashion-mnist")


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"name": "mnits"}, "name", "'fashion-mnist'"),
        ({"n_samples": 1}, "n_samples", "greater than or equal to 2"),
        ({"factor": 1.0}, "factor", "less than 1"),
        ({"factor": 0}, "factor", "greater than 0"),
        ({"noise": -0.5}, "noise", "greater than or equal to 0"),
        ({"noise": float("inf")}, "noise", "finite"),
        ({"n_classes": 1}, "n_classes", "greater than or equal to 2"),
        ({"test_fraction": 1.0}, "test_fraction", "less than 1"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"batch": 3}, "batch", "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, field: str, allowed: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        DataConfig(**kwargs)
    (err,) = info.value.errors()
    assert err["loc"] == (field,) and allowed in str(info.value)


# ---------------------------------------------------------------- toy sets and digits


@pytest.mark.parametrize(
    ("cfg", "reference", "n_classes"),
    [
        (DataConfig(name="circles", n_samples=300, factor=0.3, noise=0.05, seed=4),
         lambda: make_circles(300, 0.3, 0.05, 4), 2),
        (DataConfig(name="moons", n_samples=201, noise=0.2, seed=1),
         lambda: make_moons(201, 0.2, 1), 2),
        (DataConfig(name="xor", n_samples=99, noise=0.3, seed=2), lambda: make_xor(99, 0.3, 2), 2),
        (DataConfig(name="spiral", n_per_class=30, n_classes=4, seed=3),
         lambda: make_spiral(30, 4, 3), 4),
    ],
)  # fmt: skip
@pytest.mark.parametrize("test_fraction", [0.0, 0.25])
def test_synthetic_dispatch_and_split(
    cfg: DataConfig, reference: Callable, n_classes: int, test_fraction: float
) -> None:
    cfg = cfg.model_copy(update={"test_fraction": test_fraction})
    ds = load_dataset(cfg)
    x_ref, y_ref = reference()
    _check_dataset(ds, 2, n_classes)
    n = len(y_ref)
    n_test = 0 if test_fraction == 0 else max(1, int(n * test_fraction))
    assert len(ds.y_train) == n - n_test
    assert (ds.x_test is None) == (test_fraction == 0)
    # train + test is exactly the generator's output (with labels), just reordered
    both = np.c_[x_ref, y_ref]
    got = [np.c_[ds.x_train, ds.y_train]]
    if test_fraction > 0:
        x_test, y_test = _test_split(ds)
        assert len(y_test) == n_test
        got.append(np.c_[x_test, y_test])
    assert _rows(*got) == _rows(both)


def test_split_is_seeded_and_disjoint() -> None:
    cfg = DataConfig(name="spiral", n_per_class=50, test_fraction=0.2, seed=7)
    a, b = load_dataset(cfg), load_dataset(cfg)
    c = load_dataset(cfg.model_copy(update={"seed": 8}))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(_test_split(a)[0], _test_split(b)[0])
    assert not torch.equal(a.x_train, c.x_train)
    # with labels every point is unique (the arms share only their centre (0, 0))
    train = set(_rows(np.c_[a.x_train, a.y_train]))
    test = set(_rows(np.c_[_test_split(a)]))
    assert not train & test and len(train) + len(test) == 150


def test_tiny_test_fraction_still_holds_out_one() -> None:
    ds = load_dataset(DataConfig(name="moons", n_samples=10, test_fraction=0.01))
    assert len(_test_split(ds)[1]) == 1 and len(ds.y_train) == 9


def test_limit_cuts_training_set_only() -> None:
    cfg = DataConfig(name="spiral", n_per_class=100, test_fraction=0.1)
    full, cut = load_dataset(cfg), load_dataset(cfg.model_copy(update={"limit": 25}))
    assert torch.equal(cut.x_train, full.x_train[:25]) and torch.equal(
        _test_split(cut)[0], _test_split(full)[0]
    )
    # the class-ordered spiral is shuffled first, so a small limit still sees every arm
    assert set(cut.y_train.tolist()) == {0, 1, 2}
    big = load_dataset(cfg.model_copy(update={"limit": 10**6}))
    assert len(big.y_train) == len(full.y_train)


def test_digits_scaled_to_unit_range() -> None:
    ds = load_dataset(DataConfig(name="digits", test_fraction=0.2))
    ref = load_digits()
    _check_dataset(ds, 64, 10)
    assert len(ds.y_train) + len(_test_split(ds)[1]) == 1797 and float(ds.x_train.max()) == 1.0
    got = [np.c_[ds.x_train, ds.y_train], np.c_[_test_split(ds)]]
    assert _rows(*got) == _rows(np.c_[(ref.data / 16).astype(np.float32), ref.target])


def test_dataset_is_frozen() -> None:
    ds = load_dataset(DataConfig(name="xor", n_samples=8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.n_classes = 3  # type: ignore[misc]


# ---------------------------------------------------------------- data dir and MNIST


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GRADPROBE_DATA", raising=False)
    assert resolve_data_dir(None) == tmp_path / ".cache" / "gradprobe" / "data"
    monkeypatch.setenv("GRADPROBE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir("~/explicit") == tmp_path / "explicit"


def test_missing_mnist_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GRADPROBE_DATA", raising=False)
    with pytest.raises(GradprobeError) as info:
        load_dataset(DataConfig(name="mnist"))
    cache = tmp_path / ".cache" / "gradprobe" / "data"
    assert str(info.value) == (
        f"data.data_dir: MNIST files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz not found in {cache / 'mnist'} "
        f"or {cache}; pass --data-dir DIR, set GRADPROBE_DATA, or set data.download=true"
    )


def test_one_missing_file_is_named(tmp_path: Path, fake_mnist: Callable) -> None:
    fake_mnist(tmp_path / "fashion-mnist")["t10k-images-idx3-ubyte.gz"].unlink()
    with pytest.raises(GradprobeError, match=r"^data\.data_dir: Fashion-MNIST file t10k-images"):
        load_dataset(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))


def test_download_is_called_for_missing_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_data: Path
) -> None:
    calls: list[tuple[str, Path]] = []

    def fake_download(kind: str, cache_dir: Path) -> Path:
        calls.append((kind, cache_dir))
        (cache_dir / kind).mkdir(parents=True)
        for src in (shared_data / kind).iterdir():
            (cache_dir / kind / src.name).symlink_to(src)
        return cache_dir / kind

    monkeypatch.setattr(datasets_mod, "download", fake_download)
    monkeypatch.setenv("GRADPROBE_DATA", str(tmp_path))
    ds = load_dataset(DataConfig(name="mnist", download=True, limit=10, normalize=False))
    assert calls == [("mnist", tmp_path)]
    assert ds.x_train.shape == (10, 784) and _test_split(ds)[0].shape == (10000, 784)
    # normalize=False keeps the raw 0..255 pixel values
    raw = _independent_images(shared_data / "mnist" / "train-images-idx3-ubyte.gz", 10)
    np.testing.assert_array_equal(ds.x_train.numpy(), raw.astype(np.float32))
    assert float(_test_split(ds)[0].max()) == 255.0


def _independent_images(path: Path, n: int) -> np.ndarray:
    """First ``n`` images of an IDX .gz read with gzip + frombuffer only, shape (n, 784)."""
    with gzip.open(path, "rb") as f:
        f.read(16)
        return np.frombuffer(f.read(n * 784), dtype=np.uint8).reshape(n, 784)


def test_mnist_from_shared_dir(shared_data: Path) -> None:
    cfg = DataConfig(name="mnist", data_dir=str(shared_data), limit=500)
    ds = load_dataset(cfg)
    _check_dataset(ds, 784, 10)
    assert ds.x_train.shape == (500, 784) and _test_split(ds)[0].shape == (10000, 784)
    raw = _independent_images(shared_data / "mnist" / "train-images-idx3-ubyte.gz", 500)
    np.testing.assert_array_equal(ds.x_train.numpy(), raw.astype(np.float32) / 255)
    with gzip.open(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        test_labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    np.testing.assert_array_equal(_test_split(ds)[1].numpy(), test_labels)
    assert float(_test_split(ds)[0].max()) == 1.0


def test_unvalidated_name_is_rejected() -> None:
    cfg = DataConfig.model_construct(name="mnits")
    with pytest.raises(GradprobeError, match=r"^data\.name: 'mnits' is not a data set; allowed: "):
        load_dataset(cfg)

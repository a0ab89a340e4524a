"""Toy 2-D sets against scikit-learn and an independent CS231n spiral."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.datasets as skd
from hypothesis import given, settings
from hypothesis import strategies as st

from gradprobe.data import make_circles, make_moons, make_spiral, make_xor
from gradprobe.errors import GradprobeError


def cs231n_spiral(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The CS231n notes' spiral, with ``np.random.randn`` swapped for a seeded Generator."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n * k, 2))
    y = np.zeros(n * k, dtype="uint8")
    for j in range(k):
        ix = range(n * j, n * (j + 1))
        r = np.linspace(0.0, 1, n)
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.standard_normal(n) * 0.2
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return x, y


def _check_types(x: np.ndarray, y: np.ndarray, n: int) -> None:
    assert x.dtype == np.float32 and x.shape == (n, 2) and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.shape == (n,)


@pytest.mark.parametrize(
    ("n", "factor", "noise", "seed"), [(100, 0.5, 0.1, 0), (37, 0.2, 0.0, 3), (1000, 0.9, 0.3, 7)]
)
def test_circles_equal_sklearn(n: int, factor: float, noise: float, seed: int) -> None:
    x, y = make_circles(n, factor, noise, seed)
    x_ref, y_ref = skd.make_circles(n_samples=n, factor=factor, noise=noise, random_state=seed)
    _check_types(x, y, n)
    np.testing.assert_array_equal(x, x_ref.astype(np.float32))
    np.testing.assert_array_equal(y, y_ref)


def test_circles_noiseless_radii() -> None:
    x, y = make_circles(200, 0.3, 0.0, 1)
    radius = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.3, rtol=1e-6)


@pytest.mark.parametrize(("n", "noise", "seed"), [(100, 0.1, 0), (51, 0.0, 2)])
def test_moons_equal_sklearn(n: int, noise: float, seed: int) -> None:
    x, y = make_moons(n, noise, seed)
    x_ref, y_ref = skd.make_moons(n_samples=n, noise=noise, random_state=seed)
    _check_types(x, y, n)
    np.testing.assert_array_equal(x, x_ref.astype(np.float32))
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize(("n", "k", "seed"), [(100, 3, 0), (7, 5, 42), (1, 2, 1)])
def test_spiral_equals_cs231n(n: int, k: int, seed: int) -> None:
    x, y = make_spiral(n, k, seed)
    x_ref, y_ref = cs231n_spiral(n, k, seed)
    _check_types(x, y, n * k)
    np.testing.assert_array_equal(x, x_ref.astype(np.float32))
    np.testing.assert_array_equal(y, y_ref)


def test_spiral_geometry() -> None:
    """Radius is linspace(0, 1) on each arm whatever the angle noise; the noise has std 0.2."""
    n, k = 400, 3
    x, y = make_spiral(n, k, seed=5)
    for j in range(k):
        arm = x[y == j].astype(np.float64)
        np.testing.assert_allclose(np.hypot(arm[:, 0], arm[:, 1]), np.linspace(0, 1, n), atol=1e-6)
        angle = np.unwrap(np.arctan2(arm[1:, 0], arm[1:, 1]))  # skip r = 0, angle undefined
        resid = angle - np.linspace(j * 4, (j + 1) * 4, n)[1:]
        resid -= 2 * np.pi * np.round(np.median(resid) / (2 * np.pi))
        assert abs(resid.mean()) < 0.05 and 0.17 < resid.std() < 0.23


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_spiral_shape_and_labels_property(n: int, k: int, seed: int) -> None:
    x, y = make_spiral(n, k, seed)
    _check_types(x, y, n * k)
    np.testing.assert_array_equal(np.bincount(y, minlength=k), np.full(k, n))
    assert np.all(np.hypot(x[:, 0], x[:, 1]) <= 1 + 1e-6)


def test_xor_labels_are_xor_of_signs() -> None:
    x, y = make_xor(1001, 0.1, 3)
    _check_types(x, y, 1001)
    # noise 0.1 keeps every point (10 sigma) in its blob's quadrant
    np.testing.assert_array_equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64))
    quadrant = (x[:, 0] > 0) * 2 + (x[:, 1] > 0)
    counts = np.bincount(quadrant, minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1001
    for q in range(4):
        centre = np.array([1.0 if q >= 2 else -1.0, 1.0 if q % 2 else -1.0])
        blob = x[quadrant == q]
        np.testing.assert_allclose(blob.mean(axis=0), centre, atol=0.03)
        np.testing.assert_allclose(blob.std(axis=0), 0.1, rtol=0.2)


def test_xor_noiseless_corners_and_seeds() -> None:
    x, _ = make_xor(8, 0.0, 0)
    assert set(map(tuple, x.tolist())) == {(1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)}
    a, b, c = make_xor(50, 0.5, 1), make_xor(50, 0.5, 1), make_xor(50, 0.5, 2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: make_circles(1, 0.5, 0.1, 0), "n_samples"),
        (lambda: make_circles(10, 1.0, 0.1, 0), "factor"),
        (lambda: make_moons(10, -0.1, 0), "noise"),
        (lambda: make_xor(10, float("nan"), 0), "noise"),
        (lambda: make_xor(2.5, 0.1, 0), "n_samples"),  # type: ignore[arg-type]
        (lambda: make_spiral(0, 3, 0), "n_per_class"),
        (lambda: make_spiral(10, 1, 0), "n_classes"),
    ],
)
def test_bad_arguments_name_the_field(call, field: str) -> None:
    with pytest.raises(GradprobeError, match=rf"^{field}: .* allowed: ") as info:
        call()
    assert "\n" not in str(info.value)

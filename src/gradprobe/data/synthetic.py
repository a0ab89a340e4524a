"""Small 2-D classification sets (circles, moons, xor, spiral) as NumPy arrays."""

from __future__ import annotations

import math

import numpy as np

from gradprobe.errors import GradprobeError

__all__ = ["make_circles", "make_moons", "make_spiral", "make_xor"]

# XOR blob centres and their labels: 1 where exactly one coordinate is positive.
_XOR_CENTRES = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
_XOR_LABELS = np.array([0, 1, 0, 1], dtype=np.int64)


def _check_int(field: str, value: int, minimum: int) -> None:
    """Raise unless ``value`` is an integer of at least ``minimum``.

    Args:
        field: argument name for the message.
        value: the value passed.
        minimum: smallest allowed value.

    Raises:
        GradprobeError: ``value`` is not an int or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GradprobeError(f"{field}: {value!r} is not allowed; allowed: an integer >= {minimum}")


def _check_noise(noise: float) -> None:
    """Raise unless ``noise`` is a finite number >= 0.

    Args:
        noise: standard deviation of the Gaussian noise.

    Raises:
        GradprobeError: ``noise`` is negative, NaN or infinite.
    """
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise GradprobeError(f"noise: {noise!r} is not allowed; allowed: a finite number >= 0")


def _as_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast to the library's dtypes.

    Args:
        x: points, shape (n, 2).
        y: labels, shape (n,).

    Returns:
        ``x`` as float32 (n, 2) and ``y`` as int64 (n,), both contiguous and writable.
    """
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)


def make_circles(
    n_samples: int, factor: float, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles (label 1 = inner), exactly ``sklearn.datasets.make_circles``.

    Args:
        n_samples: total number of points (>= 2).
        factor: inner radius relative to the outer one, 0 < factor < 1.
        noise: std of the Gaussian noise added to each coordinate (>= 0).
        seed: random seed.

    Returns:
        ``x`` float32 (n_samples, 2) and ``y`` int64 (n_samples,) in {0, 1}.

    Raises:
        GradprobeError: an argument is out of range.
    """
    _check_int("n_samples", n_samples, 2)
    _check_noise(noise)
    if not 0.0 < factor < 1.0:
        raise GradprobeError(f"factor: {factor!r} is not allowed; allowed: 0 < factor < 1")
    from sklearn.datasets import make_circles as _sk_circles  # lazy: sklearn imports slowly

    x, y = _sk_circles(n_samples=n_samples, factor=factor, noise=noise, random_state=seed)
    return _as_xy(x, y)


def make_moons(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, exactly ``sklearn.datasets.make_moons``.

    Args:
        n_samples: total number of points (>= 2).
        noise: std of the Gaussian noise added to each coordinate (>= 0).
        seed: random seed.

    Returns:
        ``x`` float32 (n_samples, 2) and ``y`` int64 (n_samples,) in {0, 1}.

    Raises:
        GradprobeError: an argument is out of range.
    """
    _check_int("n_samples", n_samples, 2)
    _check_noise(noise)
    from sklearn.datasets import make_moons as _sk_moons

    x, y = _sk_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _as_xy(x, y)


def make_xor(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian blobs at (+-1, +-1); a blob's label is the XOR of its centre's signs.

    Points are dealt round-robin to the blobs (sizes differ by at most one) and then
    shuffled; the label follows the blob, so with large ``noise`` some points cross quadrants.

    Args:
        n_samples: total number of points (>= 2).
        noise: std of each blob (>= 0).
        seed: random seed for ``np.random.default_rng``.

    Returns:
        ``x`` float32 (n_samples, 2) and ``y`` int64 (n_samples,) in {0, 1}.

    Raises:
        GradprobeError: an argument is out of range.
    """
    _check_int("n_samples", n_samples, 2)
    _check_noise(noise)
    rng = np.random.default_rng(seed)
    blob = rng.permutation(np.arange(n_samples) % 4)  # (n,)
    x = _XOR_CENTRES[blob] + rng.normal(scale=noise, size=(n_samples, 2))  # (n, 2)
    return _as_xy(x, _XOR_LABELS[blob])


def make_spiral(n_per_class: int, n_classes: int, seed: int,
                generator: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """CS231n's spiral: arm j has radius linspace(0, 1) and angle linspace(4j, 4j + 4) + noise.

    Args:
        n_per_class: points per arm (>= 1).
        n_classes: number of arms (>= 2).
        seed: random seed.
        generator: ``numpy``: one ``standard_normal`` draw per arm from ``np.random.default_rng(seed)``;
            ``cs231n``: one ``randn`` per arm from ``np.random.RandomState(seed)``, which is what the
            notebook's ``np.random.seed(seed)`` + ``np.random.randn`` draw (its exact points, up to
            the float32 cast).

    Returns:
        ``x`` float32 (n_per_class * n_classes, 2), ordered by class, and ``y`` int64 labels.

    Raises:
        GradprobeError: an argument is out of range.
    """
    _check_int("n_per_class", n_per_class, 1)
    _check_int("n_classes", n_classes, 2)
    if generator not in ("numpy", "cs231n"):
        raise GradprobeError(f"generator: {generator!r} is not a spiral generator; allowed: numpy, cs231n")
    draw = (np.random.RandomState(seed).randn if generator == "cs231n"
            else np.random.default_rng(seed).standard_normal)
    n = n_per_class
    x = np.zeros((n * n_classes, 2))  # (N*K, 2)
    y = np.zeros(n * n_classes, dtype=np.int64)  # (N*K,)
    for j in range(n_classes):
        ix = slice(n * j, n * (j + 1))
        r = np.linspace(0.0, 1.0, n)  # radius
        t = np.linspace(j * 4, (j + 1) * 4, n) + draw(n) * 0.2  # angle
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return _as_xy(x, y)

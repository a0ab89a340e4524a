"""Mean-field theory of a wide random MLP: the forward variance map, its fixed point q* and chi.

For weights ``W_ij ~ N(0, sigma_w^2 / fan_in)`` and biases ``b_i ~ N(0, sigma_b^2)`` the
pre-activation variance follows ``q^l = sigma_w^2 E[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2`` with
``z ~ N(0, 1)`` (Poole et al. 2016), and the expected squared back-propagated error grows by
``chi = sigma_w^2 E[phi'(sqrt(q*) z)^2]`` per layer (Schoenholz et al. 2017).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss

from gradprobe.errors import GradprobeError
from gradprobe.models.activations import ActivationSpec, activation_spec
from gradprobe.models.inits import init_spec

__all__ = [
    "FixedPoint",
    "check_variance",
    "chi",
    "elementwise",
    "gaussian_expectation",
    "q_star",
    "sigma_w2_for_init",
]

_NODES = 64  # Gauss-Legendre nodes per smooth piece
_Z_MAX = 10.0  # |z| beyond this carries < 2e-23 of the Gaussian mass
# Pieces of the pre-activation axis: every activation varies on the scale of 1 around 0, the
# Gaussian on the scale of sqrt(q). Gauss-Hermite alone resolves only the second (101 nodes are
# 1.5% off for E[tanh'(h)^2] at q = 9), so both scales get breakpoints.
_SCALE_BREAKS = (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0, 8.0, -8.0, 16.0, -16.0)
_Q_ATOL = 1e-12
_Q_RTOL = 1e-10
_Q_MAX_ITER = 1000
_Q_DIVERGED = 1e30  # unbounded activations with chi-like gain > 1: q grows without a fixed point

_Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FixedPoint:
    """Where the variance map ended: ``q`` is q* if ``converged``, ``inf`` if it diverged."""

    q: float  # fixed point (or last iterate if not converged; inf if it diverged)
    converged: bool
    iterations: int
    q_last_finite: float  # last finite iterate: where chi is evaluated when q diverged


def check_variance(field: str, value: float) -> float:
    """Validate a variance such as sigma_w^2: a finite number >= 0.

    Args:
        field: Name shown in the message, e.g. ``theory.sigma_w2``.
        value: The value given.

    Returns:
        The value as a float.

    Raises:
        GradprobeError: If it is not a finite number >= 0.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise GradprobeError(f"{field}: {value!r} is not a variance; allowed: finite numbers >= 0")
    return float(value)


def elementwise(activation: str) -> ActivationSpec:
    """Parse an activation spec and require an elementwise function and derivative.

    Args:
        activation: Spec string, e.g. ``"tanh"`` or ``"leaky_relu:0.1"``.

    Returns:
        The validated spec.

    Raises:
        GradprobeError: On an unknown or malformed activation, or for maxout.
    """
    spec = activation_spec(activation, "theory.activation")
    if spec.fn is None or spec.derivative is None:
        raise GradprobeError(
            f"theory.activation: {activation!r} is not elementwise (mean-field theory needs "
            "phi(h) per unit); allowed: any activation but maxout"
        )
    return spec


@cache
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1]."""
    return leggauss(_NODES)


def _pieces(breaks: tuple[float, ...], scale: float) -> list[tuple[float, float]]:
    """Split ``[-Z, Z]`` (in z units) at the breakpoints ``x = scale * z`` that fall inside it."""
    inner = sorted({x / scale for x in breaks if abs(x / scale) < _Z_MAX})
    edges = [-_Z_MAX, *inner, _Z_MAX]
    return list(itertools.pairwise(edges))


def gaussian_expectation(fn: _Fn, q: float, kinks: tuple[float, ...] = ()) -> float:
    """``E[fn(sqrt(q) z)]`` for ``z ~ N(0, 1)`` by piecewise Gauss-Legendre quadrature.

    ``[-10, 10]`` in z is cut at ``x = 0, +-0.5, +-1, +-2, +-4, +-8, +-16`` and at the kinks, and
    each piece gets 64 nodes against the Gaussian density, so both the activation's own scale and
    the Gaussian's are resolved for any q (a plain 101-node Gauss-Hermite rule is not).

    Args:
        fn: Elementwise torch function of a float64 tensor.
        q: Variance of the argument, >= 0 (``q = 0`` gives ``fn(0)``).
        kinks: Arguments ``x`` where ``fn`` is not smooth besides 0 (the registry entry's ``kinks``).

    Returns:
        The expectation (may be inf or nan if ``fn`` overflows).
    """
    scale = math.sqrt(q)
    if scale == 0.0:
        return float(fn(torch.zeros(1, dtype=torch.float64))[0])
    t, v = _legendre()
    pieces = _pieces(_SCALE_BREAKS + kinks, scale)
    z = np.concatenate([(b - a) / 2 * t + (a + b) / 2 for a, b in pieces])  # (nodes,)
    w = np.concatenate([(b - a) / 2 * v for a, b in pieces])  # (nodes,)
    w = w * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    values = fn(torch.from_numpy(scale * z)).numpy()  # (nodes,)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(w, values))


def _variance_map(spec: ActivationSpec, sigma_w2: float, sigma_b2: float) -> Callable[[float], float]:
    """The map ``q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2``."""
    fn = spec.fn
    assert fn is not None  # elementwise() checked it
    kinks = spec.entry.kinks
    return lambda q: sigma_w2 * gaussian_expectation(lambda x: fn(x) ** 2, q, kinks) + sigma_b2


def q_star(activation: str, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0) -> FixedPoint:
    """Iterate the forward variance map from ``q0`` to its fixed point q*.

    Stops when ``|q^l - q^{l-1}| <= 1e-12 + 1e-10 q^l``, when q exceeds 1e30 (diverged, e.g. ReLU
    with sigma_w^2 > 2) or after 1000 iterations (not converged, e.g. tanh near sigma_w^2 = 1
    where q creeps to 0 like 1/l).

    Args:
        activation: Elementwise activation spec, e.g. ``"tanh"``.
        sigma_w2: ``fan_in * Var(W_ij)``, >= 0.
        sigma_b2: ``Var(b_i)``, >= 0.
        q0: Variance of the first pre-activation, >= 0.

    Returns:
        The fixed point with its convergence flag and iteration count.

    Raises:
        GradprobeError: On a bad activation or a negative or non-finite variance.
    """
    step = _variance_map(
        elementwise(activation),
        check_variance("theory.sigma_w2", sigma_w2),
        check_variance("theory.sigma_b2", sigma_b2),
    )
    q = check_variance("theory.q0", q0)
    for iteration in range(1, _Q_MAX_ITER + 1):
        new = step(q)
        if not math.isfinite(new) or new > _Q_DIVERGED:
            return FixedPoint(math.inf, False, iteration, q)
        if abs(new - q) <= _Q_ATOL + _Q_RTOL * new:
            return FixedPoint(new, True, iteration, new)
        q = new
    return FixedPoint(q, False, _Q_MAX_ITER, q)


def chi(activation: str, sigma_w2: float, sigma_b2: float = 0.0, q: float | None = None) -> float:
    """Per-layer growth of the expected squared gradient, ``sigma_w^2 E[phi'(sqrt(q) z)^2]``.

    Args:
        activation: Elementwise activation spec.
        sigma_w2: ``fan_in * Var(W_ij)``, >= 0.
        sigma_b2: ``Var(b_i)``, >= 0.
        q: Pre-activation variance; None uses q* from :func:`q_star` (its last finite iterate
            if the map diverged).

    Returns:
        chi: < 1 ordered (gradients vanish), 1 the edge of chaos, > 1 chaotic (they explode).

    Raises:
        GradprobeError: On a bad activation or a negative or non-finite variance.
    """
    spec = elementwise(activation)
    sigma_w2 = check_variance("theory.sigma_w2", sigma_w2)
    if q is None:
        q = q_star(activation, sigma_w2, sigma_b2).q_last_finite
    q = check_variance("theory.q", q)
    derivative = spec.derivative
    assert derivative is not None  # elementwise() checked it
    kinks = spec.entry.kinks
    return sigma_w2 * gaussian_expectation(lambda x: derivative(x) ** 2, q, kinks)


def sigma_w2_for_init(init: str, width: int | None) -> float:
    """``sigma_w^2 = fan_in * Var(W_ij)`` an initialiser gives a square ``width x width`` layer.

    Args:
        init: Initialiser spec, e.g. ``"he_normal"`` or ``"normal:0.1"``.
        width: Layer width; None is allowed only if the answer does not depend on it
            (glorot, he, lecun, orthogonal).

    Returns:
        sigma_w^2, e.g. 1 for glorot_* and lecun_*, 2 for he_*, GAIN^2 for orthogonal.

    Raises:
        GradprobeError: On a bad spec, a non-zero-mean init (mean-field assumes zero mean), a
            width below 1, or a width-dependent init without a width.
    """
    spec = init_spec(init, "theory.init")
    mean = {"normal": lambda a: a[0], "uniform": lambda a: (a[0] + a[1]) / 2}.get(spec.name)
    if mean is not None and mean(spec.args) != 0:
        raise GradprobeError(
            f"theory.init: {init!r} has non-zero mean {mean(spec.args):g}; allowed: zero-mean "
            "inits (mean-field theory assumes E[W_ij] = 0), e.g. normal:0.1 or uniform:0.1"
        )
    if width is None:
        at_100, at_101 = (spec.weight_variance(n, n) * n for n in (100, 101))
        if not math.isclose(at_100, at_101, rel_tol=1e-12):
            raise GradprobeError(
                f"theory.width: None, but sigma_w^2 of {init!r} depends on the width; "
                "allowed: a width >= 1 (e.g. --width 100)"
            )
        return at_100
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise GradprobeError(f"theory.width: {width!r} is not a width; allowed: integers >= 1")
    return spec.weight_variance(width, width) * width

"""Mean-field theory of the erf network against integrals computed here (scipy quad) and their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from gradprobe import theory


def _expect(f, q: float) -> float:
    """E[f(sqrt(q) z)] for z ~ N(0, 1), by adaptive quadrature (independent of gradprobe)."""
    s = math.sqrt(q)
    value, _ = integrate.quad(lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                              -np.inf, np.inf, epsabs=1e-14, epsrel=1e-12)
    return value


def _d_erf(x: float) -> float:
    return 2 / math.sqrt(math.pi) * math.exp(-x * x)


@pytest.mark.parametrize("q", [1e-3, 0.2, 1.0, 5.0, 100.0])
@pytest.mark.parametrize("sigma_w2", [1.0, 2.5])
def test_erf_chi_matches_a_direct_integral(q: float, sigma_w2: float) -> None:
    direct = sigma_w2 * _expect(lambda x: _d_erf(x) ** 2, q)
    # and the closed form E[erf'(h)^2] = 4 / (pi sqrt(1 + 4 q)) as a second, analytic oracle
    assert direct == pytest.approx(sigma_w2 * 4 / (math.pi * math.sqrt(1 + 4 * q)), rel=1e-9)
    assert theory.chi("erf", sigma_w2, q=q) == pytest.approx(direct, rel=1e-8)


def test_erf_q_star_is_a_fixed_point_of_the_direct_map() -> None:
    fixed = theory.q_star("erf", 3.0, 0.1)
    assert fixed.converged
    again = 3.0 * _expect(lambda x: math.erf(x) ** 2, fixed.q) + 0.1
    assert again == pytest.approx(fixed.q, rel=1e-8)
    # E[erf(h)^2] = (2 / pi) arcsin(2q / (1 + 2q)) (Williams 1998)
    assert again == pytest.approx(3.0 * 2 / math.pi * math.asin(2 * fixed.q / (1 + 2 * fixed.q)) + 0.1, rel=1e-9)

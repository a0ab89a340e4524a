"""Mean-field q* and chi against closed forms and an independent integrator (scipy.integrate.quad)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

from gradprobe import theory
from gradprobe.errors import GradprobeError


def _gauss(f, q: float) -> float:
    """E[f(sqrt(q) z)], z ~ N(0, 1), by adaptive quadrature split at 0 (independent of gradprobe)."""
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    s = math.sqrt(q)
    left = integrate.quad(lambda z: f(s * z) * pdf(z), -np.inf, 0, epsabs=1e-13, epsrel=1e-12)[0]
    right = integrate.quad(lambda z: f(s * z) * pdf(z), 0, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
    return left + right


_SIG = special.expit
# name -> (phi, phi') written with math/scipy, not torch
_NUMPY_ACTIVATIONS = {
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "sigmoid": (_SIG, lambda x: _SIG(x) * (1 - _SIG(x))),
    "gelu": (lambda x: x * special.ndtr(x),
             lambda x: special.ndtr(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "silu": (lambda x: x * _SIG(x), lambda x: _SIG(x) * (1 + x * (1 - _SIG(x)))),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(max(x, -700.0))),
}


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.3])
def test_linear_chi_is_sigma_w2(sigma_w2: float, sigma_b2: float) -> None:
    assert theory.chi("linear", sigma_w2, sigma_b2) == pytest.approx(sigma_w2, rel=1e-12)


@pytest.mark.parametrize("q", [1e-6, 0.3, 1.0, 50.0, 1e8])
@pytest.mark.parametrize("sigma_w2", [0.7, 2.0, 3.3])
def test_relu_chi_is_half_sigma_w2_at_any_q(q: float, sigma_w2: float) -> None:
    assert theory.chi("relu", sigma_w2, q=q) == pytest.approx(sigma_w2 / 2, rel=1e-10)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
def test_leaky_relu_chi(alpha: float) -> None:
    assert theory.chi(f"leaky_relu:{alpha}", 1.7, q=0.8) == pytest.approx(1.7 * (1 + alpha**2) / 2, rel=1e-10)


@pytest.mark.parametrize("q", [0.1, 1.0, 4.0, 25.0])
def test_hard_sigmoid_chi_erf_closed_form(q: float) -> None:
    # phi' = 1/6 on (-3, 3): chi = sigma_w^2 P(|h| < 3) / 36 = sigma_w^2 erf(3 / sqrt(2 q)) / 36
    expected = 1.3 * math.erf(3 / math.sqrt(2 * q)) / 36
    assert theory.chi("hard_sigmoid", 1.3, q=q) == pytest.approx(expected, rel=1e-9)


def test_he_init_puts_relu_at_the_edge_of_chaos() -> None:
    for init in ("he_normal", "he_uniform", "kaiming_normal"):
        sigma_w2 = theory.sigma_w2_for_init(init, 100)
        assert sigma_w2 == pytest.approx(2.0)
        assert abs(theory.chi("relu", sigma_w2) - 1.0) < 1e-3


def test_sigma_w2_for_init_square_layer() -> None:
    assert theory.sigma_w2_for_init("glorot_uniform", 64) == pytest.approx(1.0)
    assert theory.sigma_w2_for_init("lecun_normal", None) == pytest.approx(1.0)
    assert theory.sigma_w2_for_init("orthogonal:1.5", None) == pytest.approx(2.25)
    assert theory.sigma_w2_for_init("normal:0.1", 100) == pytest.approx(1.0)
    assert theory.sigma_w2_for_init("uniform:0.3", 10) == pytest.approx(10 * 0.6**2 / 12)


def test_sigmoid_derivative_at_most_a_quarter() -> None:
    assert theory.derivative_chain("sigmoid", 0.0, 4) == pytest.approx([0.25**n for n in range(1, 5)])
    for x in np.linspace(-8, 8, 33):
        assert 0 < theory.derivative_chain("sigmoid", float(x), 1)[0] <= 0.25
    for q in (1e-8, 0.5, 3.0, 40.0):  # so chi <= sigma_w^2 / 16 at any variance, equal as q -> 0
        assert theory.chi("sigmoid", 2.0, q=q) <= 2.0 / 16
    assert theory.chi("sigmoid", 2.0, q=1e-8) == pytest.approx(2.0 / 16, rel=1e-6)


@pytest.mark.parametrize("name", sorted(_NUMPY_ACTIVATIONS))
@pytest.mark.parametrize("q", [1e-3, 0.05, 1.0, 9.0, 400.0, 1e4])
def test_chi_matches_independent_quadrature(name: str, q: float) -> None:
    _, dphi = _NUMPY_ACTIVATIONS[name]
    assert theory.chi(name, 1.4, q=q) == pytest.approx(1.4 * _gauss(lambda x: dphi(x) ** 2, q), rel=1e-8)


@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2"),
                         [("tanh", 1.5, 0.0), ("tanh", 2.0, 0.05), ("sigmoid", 1.0, 0.0), ("elu", 1.5, 0.1)])
def test_q_star_is_a_fixed_point_of_the_independent_map(name: str, sigma_w2: float, sigma_b2: float) -> None:
    phi, _ = _NUMPY_ACTIVATIONS[name]
    fixed = theory.q_star(name, sigma_w2, sigma_b2)
    assert fixed.converged
    again = sigma_w2 * _gauss(lambda x: phi(x) ** 2, fixed.q) + sigma_b2
    assert again == pytest.approx(fixed.q, rel=1e-8)


def test_q_star_closed_forms() -> None:
    # linear: q = sigma_w^2 q + sigma_b^2; relu: q = sigma_w^2 q / 2 + sigma_b^2
    assert theory.q_star("linear", 0.5, 0.2).q == pytest.approx(0.2 / 0.5, rel=1e-8)
    assert theory.q_star("relu", 1.0, 0.3).q == pytest.approx(0.3 / 0.5, rel=1e-8)
    assert theory.q_star("relu", 2.0, 0.0, q0=3.0).q == pytest.approx(3.0, rel=1e-12)


def test_non_convergence_is_reported_not_looped() -> None:
    diverged = theory.q_star("relu", 3.0)  # q grows by 1.5 per layer
    assert not diverged.converged and diverged.q == math.inf
    result = theory.predict("relu", 3.0, depth=4)
    assert result.chi == pytest.approx(1.5) and result.to_dict()["q_star"] is None
    slow = theory.q_star("tanh", 1.0)  # critical: q creeps to 0 like 1/l
    assert not slow.converged and 0 < slow.q < 1e-2


def test_predict_per_layer_ratio_and_dict() -> None:
    result = theory.predict("tanh", 1.5, depth=5)
    assert result.per_layer_ratio == pytest.approx([result.chi ** (5 - l) for l in range(1, 6)])
    doc = result.to_dict()
    assert set(doc) >= {"activation", "sigma_w2", "sigma_b2", "q_star", "chi", "per_layer_ratio", "monte_carlo"}
    assert doc["monte_carlo"] is None and doc["per_layer_ratio"][-1] == 1.0
    huge = theory.predict("linear", 1e3, depth=200).to_dict()  # overflow is data: inf -> null
    assert huge["per_layer_ratio"][0] is None and huge["per_layer_ratio"][-1] == 1.0


@pytest.mark.parametrize(("call", "field"), [
    (lambda: theory.predict("tanh", -1.0, depth=3), "theory.sigma_w2"),
    (lambda: theory.predict("tanh", 1.0, -0.1, depth=3), "theory.sigma_b2"),
    (lambda: theory.predict("tanh", float("nan"), depth=3), "theory.sigma_w2"),
    (lambda: theory.predict("tanh", 1.0, depth=0), "theory.depth"),
    (lambda: theory.predict("tanhh", 1.0, depth=3), "theory.activation"),
    (lambda: theory.predict("maxout", 1.0, depth=3), "theory.activation"),
    (lambda: theory.predict("tanh", 1.0, depth=3, width=0), "theory.width"),
    (lambda: theory.predict("tanh", 1.0, depth=3, width=8, mc_samples=1), "theory.mc_samples"),
    (lambda: theory.sigma_w2_for_init("normal:0.5:0.1", 10), "theory.init"),
    (lambda: theory.sigma_w2_for_init("normal:0.1", None), "theory.width"),
    (lambda: theory.sigma_w2_for_init("bogus", 10), "theory.init"),
])
def test_bad_input_is_one_line_naming_the_field(call, field: str) -> None:
    with pytest.raises(GradprobeError) as info:
        call()
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message and "allowed" in message

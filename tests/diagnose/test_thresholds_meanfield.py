"""The numbers in thresholds.py's rationale: sigmoid at sigma_w^2 = 5 has q* = 1.541 and chi = 0.200."""

from __future__ import annotations

import numpy as np
import pytest

from gradprobe.diagnose import thresholds
from gradprobe.theory import chi, q_star


def test_sigmoid_chi_and_q_star_match_a_numpy_integral() -> None:
    z = np.linspace(-12.0, 12.0, 200_001)
    w = np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * (z[1] - z[0])  # N(0, 1) weights for a Riemann sum

    def sig(h: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-h))

    q = 1.0
    for _ in range(200):
        q = 5.0 * float(np.sum(w * sig(np.sqrt(q) * z) ** 2))
    d = sig(np.sqrt(q) * z) * (1 - sig(np.sqrt(q) * z))
    c = 5.0 * float(np.sum(w * d * d))
    assert (round(q, 3), round(c, 3)) == (1.541, 0.200)
    assert q_star("sigmoid", 5.0).q == pytest.approx(q, rel=1e-8)
    assert chi("sigmoid", 5.0) == pytest.approx(c, rel=1e-8)
    doc = thresholds.__doc__ or ""
    assert "q* = 1.541" in doc and "chi = 0.200" in doc and "chi^(L/2)" in doc
    assert f"0.200^2 = 1/{1 / c**2:.0f}" in doc  # the |delta| ratio over 4 layers

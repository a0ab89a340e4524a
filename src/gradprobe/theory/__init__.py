"""Theory of gradient flow at initialisation: mean field, Monte Carlo, activation curves (public re-exports).

Example:
    >>> from gradprobe import theory
    >>> result = theory.predict("relu", theory.sigma_w2_for_init("he_normal", 100), depth=10)
    >>> round(result.chi, 6)
    1.0
"""

from gradprobe.theory.curves import activation_curve, decay_chains, derivative_chain
from gradprobe.theory.meanfield import FixedPoint, chi, q_star, sigma_w2_for_init
from gradprobe.theory.measured import MeasuredRatio, measured_ratio
from gradprobe.theory.montecarlo import MonteCarloResult
from gradprobe.theory.predict import TheoryResult, predict, predict_for_run

__all__ = [
    "FixedPoint",
    "MeasuredRatio",
    "MonteCarloResult",
    "TheoryResult",
    "activation_curve",
    "chi",
    "decay_chains",
    "derivative_chain",
    "measured_ratio",
    "predict",
    "predict_for_run",
    "q_star",
    "sigma_w2_for_init",
]

"""Mean-field predictions of gradient flow at initialisation (public re-exports).

Example:
    >>> from gradprobe import theory
    >>> result = theory.predict("relu", theory.sigma_w2_for_init("he_normal", 100), depth=10)
    >>> round(result.chi, 6)
    1.0
"""

from gradprobe.diagnose.meanfield import FixedPoint, chi, q_star, sigma_w2_for_init
from gradprobe.diagnose.montecarlo import MonteCarloResult
from gradprobe.diagnose.theory import (
    MeasuredRatio,
    TheoryResult,
    derivative_chain,
    measured_ratio,
    predict,
    predict_for_run,
)

__all__ = [
    "FixedPoint",
    "MeasuredRatio",
    "MonteCarloResult",
    "TheoryResult",
    "chi",
    "derivative_chain",
    "measured_ratio",
    "predict",
    "predict_for_run",
    "q_star",
    "sigma_w2_for_init",
]

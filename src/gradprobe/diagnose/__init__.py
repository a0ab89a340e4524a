"""Records -> verdicts and numbers; never touches hooks, autograd or plotting."""

from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.factors import factor_series, median_factor, vanishing_factor
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import PRECEDENCE, Diagnosis, LayerVerdict, Verdict
from gradprobe.theory import TheoryResult, chi, derivative_chain, predict, predict_for_run, q_star, sigma_w2_for_init

__all__ = ["PRECEDENCE", "Diagnosis", "LayerVerdict", "TheoryResult", "Thresholds", "Verdict", "chi",
           "derivative_chain", "diagnose", "factor_series", "median_factor", "predict", "predict_for_run", "q_star",
           "sigma_w2_for_init", "vanishing_factor"]

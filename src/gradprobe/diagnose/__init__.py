"""Records -> verdicts and numbers; never touches hooks, autograd or plotting."""

from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.factors import factor_series, median_factor, vanishing_factor
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import PRECEDENCE, Diagnosis, LayerVerdict, Verdict

__all__ = ["PRECEDENCE", "Diagnosis", "LayerVerdict", "Thresholds", "Verdict", "diagnose", "factor_series",
           "median_factor", "vanishing_factor"]

"""Records -> verdicts and numbers; never touches hooks, autograd or plotting."""

from gradprobe.diagnose.factors import factor_series, median_factor, vanishing_factor

__all__ = ["factor_series", "median_factor", "vanishing_factor"]

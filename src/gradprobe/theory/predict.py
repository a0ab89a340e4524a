"""Mean-field prediction of per-layer gradient ratios chi^(L-l), with its finite-width Monte Carlo check.

``predict`` combines the fixed point and chi (``meanfield.py``) with a Monte Carlo estimate
(``montecarlo.py``); ``measured.py`` reads the same ratio off a stored run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from gradprobe.errors import GradprobeError
from gradprobe.models.config import ModelConfig
from gradprobe.store.reader import Run
from gradprobe.theory.meanfield import check_variance, chi, elementwise, q_star, sigma_w2_for_init
from gradprobe.theory.montecarlo import MonteCarloConfig, MonteCarloResult, monte_carlo_ratio

__all__ = ["TheoryResult", "predict", "predict_for_run"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TheoryResult:
    """Mean-field prediction (and optional Monte Carlo check) of per-layer gradient ratios."""

    activation: str  # canonical spec, e.g. "leaky_relu:0.01"
    sigma_w2: float
    sigma_b2: float
    q_star: float  # inf if the variance map diverged
    converged: bool  # False: q_star is the last iterate (or inf), chi is evaluated there
    chi: float
    per_layer_ratio: tuple[float, ...]  # (L,): chi^(L-l) for l = 1..L, the last is 1
    monte_carlo: MonteCarloResult | None

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.per_layer_ratio)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; non-finite numbers become None (JSON null).

        Returns:
            ``{"activation", "sigma_w2", "sigma_b2", "q_star", "chi", "per_layer_ratio",
            "monte_carlo", "converged", "depth"}``; ``monte_carlo`` is None without a width.
        """
        def num(value: float) -> float | None:
            return value if math.isfinite(value) else None

        mc = None
        if self.monte_carlo is not None:
            mc = self.monte_carlo.to_dict()
            for key in ("per_layer_ratio", "stderr"):
                mc[key] = [num(v) for v in getattr(self.monte_carlo, key)]
        return {"activation": self.activation, "sigma_w2": self.sigma_w2,
                "sigma_b2": self.sigma_b2, "q_star": num(self.q_star), "chi": num(self.chi),
                "per_layer_ratio": [num(v) for v in self.per_layer_ratio], "monte_carlo": mc,
                "converged": self.converged, "depth": self.depth}


def predict(
    activation: str, sigma_w2: float, sigma_b2: float = 0.0, *, depth: int,
    width: int | None = None, mc_samples: int = 32, seed: int = 0,
) -> TheoryResult:
    """Mean-field q*, chi and ``chi^(L-l)``, plus a Monte Carlo estimate when a width is given.

    Args:
        activation: Elementwise activation spec, e.g. ``"tanh"``.
        sigma_w2: ``fan_in * Var(W_ij)``, >= 0 (see :func:`sigma_w2_for_init`).
        sigma_b2: ``Var(b_i)``, >= 0.
        depth: Number of layers L, >= 1.
        width: Width N of the Monte Carlo networks; None skips the Monte Carlo estimate.
        mc_samples: Number of random networks M, >= 2.
        seed: Seed of the Monte Carlo networks.

    Returns:
        The prediction; ``per_layer_ratio[l-1]`` is ``E|g_l|^2 / E|g_L|^2`` for layer l.

    Raises:
        GradprobeError: On a bad activation, variance, depth, width or sample count.
    """
    spec = elementwise(activation)
    sigma_w2 = check_variance("theory.sigma_w2", sigma_w2)
    sigma_b2 = check_variance("theory.sigma_b2", sigma_b2)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise GradprobeError(f"theory.depth: {depth!r} is not a depth; allowed: integers >= 1")
    cfg = None if width is None else MonteCarloConfig(width, depth, mc_samples, seed=seed)
    fixed = q_star(str(spec), sigma_w2, sigma_b2)
    gain = chi(str(spec), sigma_w2, sigma_b2, q=fixed.q_last_finite)
    with np.errstate(over="ignore", invalid="ignore"):
        ratios = np.power(gain, np.arange(depth - 1, -1, -1, dtype=np.float64))  # (L,)
    mc = None
    if cfg is not None:
        mc = monte_carlo_ratio(str(spec), sigma_w2, sigma_b2, fixed.q_last_finite, cfg)
    return TheoryResult(str(spec), sigma_w2, sigma_b2, fixed.q, fixed.converged, gain,
                        tuple(ratios.tolist()), mc)


def predict_for_run(run: Run, mc_samples: int = 32, seed: int = 0) -> TheoryResult:
    """The prediction for a stored MLP run: its activation, init and width, L = weight matrices.

    Uses sigma_w^2 of a square ``width x width`` layer of the hidden init at the first hidden
    width and sigma_b^2 = 0 (biases start at a constant); layer 1 is the first weight matrix.

    Args:
        run: A run whose config has a ``model`` section.
        mc_samples: Monte Carlo networks, >= 2.
        seed: Monte Carlo seed.

    Returns:
        The prediction with a Monte Carlo estimate at the run's width.

    Raises:
        GradprobeError: If the run has no model config or its activation is not elementwise.
    """
    try:
        model = ModelConfig.model_validate(run.config.get("model", {}))
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise GradprobeError(f"run: {run.run_id!r} has no usable model config ({first})") from None
    widths = model.widths()
    if len(set(widths)) > 1:
        _log.info("run %s has widths %s; theory uses a square layer of width %d",
                  run.run_id, widths, widths[0])
    sigma_w2 = sigma_w2_for_init(model.init, widths[0])
    return predict(model.activation, sigma_w2, 0.0, depth=len(widths) + 1, width=widths[0],
                   mc_samples=mc_samples, seed=seed)

"""What theory predicts for gradient flow: chained derivatives, mean-field chi^(L-l) and its check.

``predict`` combines the mean-field fixed point and chi (``meanfield.py``) with a finite-width
Monte Carlo estimate (``montecarlo.py``); ``measured_ratio`` reads the same ratio off a stored run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.diagnose.meanfield import (
    check_variance,
    chi,
    elementwise,
    q_star,
    sigma_w2_for_init,
)
from gradprobe.diagnose.montecarlo import MonteCarloConfig, MonteCarloResult, monte_carlo_ratio
from gradprobe.errors import GradprobeError
from gradprobe.models.activations import activation_spec
from gradprobe.models.config import ModelConfig
from gradprobe.store.reader import Run

__all__ = [
    "MeasuredRatio",
    "TheoryResult",
    "decay_chains",
    "derivative_chain",
    "measured_ratio",
    "predict",
    "predict_for_run",
]

_log = logging.getLogger(__name__)


def decay_chains(activations: list[str], xs: list[float], steps: int) -> list[dict[str, Any]]:
    """``{"activation", "x", "products"}`` for every activation and x: the table of the sigmoid-decay preset."""
    return [{"activation": a, "x": x, "products": derivative_chain(a, x, steps)} for a in activations for x in xs]


def derivative_chain(activation: str, x: float, steps: int) -> list[float]:
    """Running product ``prod_{k<=n} phi'(x)`` for n = 1..steps: the factor a gradient picks up
    through n layers that all sit at pre-activation x (0.25^n for the sigmoid at 0).

    Raises:
        GradprobeError: for an activation without an elementwise derivative (maxout).
    """
    spec = activation_spec(activation, "decay.activations")
    if spec.derivative is None:
        raise GradprobeError(f"decay.activations: {activation!r} has no elementwise derivative; "
                             "use an elementwise activation")
    factor = float(spec.derivative(torch.tensor([x], dtype=torch.float64))[0])
    out, running = [], 1.0
    for _ in range(steps):
        running *= factor
        out.append(running)
    return out


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


@dataclass(frozen=True)
class MeasuredRatio:
    """Mean squared weight gradient per layer at one step, and its ratio to the last layer."""

    step: int
    layers: tuple[str, ...]  # weight parameter names, first layer first
    mean_square: tuple[float, ...]  # norm^2 / numel per layer
    ratio: tuple[float, ...]  # mean_square / mean_square of the last layer


def measured_ratio(run: Run) -> MeasuredRatio:
    """Read the per-layer mean squared weight gradient at the first recorded step of a run.

    ``numel`` comes from the recorded stats themselves: with ``std`` unbiased,
    ``norm^2 = (n - 1) std^2 + n mean^2``, so ``n = (norm^2 + std^2) / (std^2 + mean^2)``.

    Args:
        run: A stored run with grad ``norm``, ``std`` and ``mean`` of its weights.

    Returns:
        The measured ratios (nan for a layer whose last-layer reference is 0).

    Raises:
        GradprobeError: If the run recorded no weight gradients with these three stats.
    """
    frame = run.frame(kind=R.GRAD, stat=[R.NORM, R.STD, R.MEAN])
    frame = frame[frame["tensor"] == "weight"]
    if frame.empty:
        raise GradprobeError(
            f"run: {run.run_id!r} has no grad norm/std/mean of weights; allowed: runs recorded "
            "with those grad_stats (the default)"
        )
    step = int(frame["step"].min())
    wide = frame[frame["step"] == step].pivot_table(
        index="layer", columns="stat", values="value", aggfunc="first")
    if not {R.NORM, R.STD, R.MEAN} <= set(wide.columns):
        raise GradprobeError(f"run: {run.run_id!r} lacks one of grad norm/std/mean at step {step}; "
                             "allowed: runs recorded with all three grad_stats")
    names = [n.removesuffix(".weight") for n in run.summary.get("weight_layers") or []]
    order = [n for n in names if n in wide.index] or sorted(
        wide.index, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    wide = wide.loc[order]
    ms = _mean_square(wide[R.NORM], wide[R.STD], wide[R.MEAN])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ms / ms[-1]
    return MeasuredRatio(step, tuple(f"{n}.weight" for n in order), tuple(ms.tolist()),
                         tuple(ratio.tolist()))


def _mean_square(norm: pd.Series, std: pd.Series, mean: pd.Series) -> np.ndarray:
    """``norm^2 / numel`` with numel recovered from the unbiased std (see measured_ratio)."""
    sq = norm.to_numpy() ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        numel = np.round((sq + std.to_numpy() ** 2) / (std.to_numpy() ** 2 + mean.to_numpy() ** 2))
        return np.where(sq == 0, 0.0, sq / numel)

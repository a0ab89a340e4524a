"""Figures of the mean-field theory: predicted vs measured gradients, chi(sigma_w), derivative chains."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from gradprobe.errors import GradprobeError
from gradprobe.store.reader import Run
from gradprobe.theory import TheoryResult, chi, measured_ratio, q_star, sigma_w2_for_init

__all__ = ["chi_vs_sigma", "predicted_vs_measured"]

_INIT_MARKERS = (("glorot_uniform", "o", "Glorot"), ("he_normal", "s", "He"),
                 ("lecun_normal", "x", "LeCun"))
_SIGMA_W = np.geomspace(0.25, 8.0, 61)  # (61,), grid of sigma_w for chi_vs_sigma
_SIGMA_W_TICKS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def predicted_vs_measured(run: Run, result: TheoryResult) -> Figure:
    """Per-layer mean squared weight gradient at the first recorded step vs ``chi^(L-l)``.

    Requires: grad ``norm``, ``std`` and ``mean`` of every weight matrix (kind ``grad``).

    Args:
        run: A stored run; its weight matrices are layers 1..L.
        result: The prediction for it, e.g. from ``predict_for_run(run)``; with a Monte Carlo
            estimate the band is its mean +- 2 standard errors.

    Returns:
        Figure with log y: measured ratio to the last layer, the prediction and its band.

    Raises:
        GradprobeError: If the run lacks the stats or the prediction's depth differs.
    """
    measured = measured_ratio(run)
    depth = len(measured.layers)
    if result.depth != depth:
        raise GradprobeError(f"theory.depth: {result.depth} layers predicted but run "
                             f"{run.run_id!r} has {depth} weight matrices; allowed: {depth}")
    x = np.arange(1, depth + 1)  # (L,)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    mc = result.monte_carlo
    if mc is not None:
        mean, se = np.asarray(mc.per_layer_ratio), np.asarray(mc.stderr)  # (L,)
        low = np.maximum(mean - 2 * se, mean * 1e-3)  # keep the band positive on a log axis
        ax.fill_between(x, low, mean + 2 * se, color="tab:orange", alpha=0.25,
                        label=f"Monte Carlo mean +- 2 SE (width {mc.width}, {mc.samples} nets)")
    ax.plot(x, result.per_layer_ratio, "--", color="tab:orange",
            label=f"mean field chi^(L-l), chi = {result.chi:.3g}")
    ratio = np.asarray(measured.ratio, dtype=float)
    shown = np.where(ratio > 0, ratio, np.nan)  # zero or nan cannot sit on a log axis
    ax.plot(x, shown, "o-", color="tab:blue", label=f"measured, step {measured.step}")
    ax.set_yscale("log")
    ax.set_xticks(x, [name.removesuffix(".weight") for name in measured.layers], rotation=45)
    ax.set_xlabel("weight layer l (input side left)")
    ax.set_ylabel("mean grad^2 of layer l / of last layer")
    ax.set_title(f"{run.run_id}\n{result.activation}, sigma_w^2 = {result.sigma_w2:.3g}",
                 fontsize=9)
    ax.legend(fontsize=8)
    return fig


def chi_vs_sigma(activations: Sequence[str], sigma_b2: float = 0.0) -> Figure:
    """chi against sigma_w for each activation, the edge of chaos and where inits put sigma_w.

    Requires: nothing recorded; computed from the activations by quadrature.

    Args:
        activations: Elementwise activation specs, e.g. ``["sigmoid", "tanh", "relu"]``.
        sigma_b2: Bias variance, >= 0.

    Returns:
        Figure with log x (sigma_w) and log y (chi); chi = 1 dashed; markers at the sigma_w of
        Glorot, He and LeCun for a square layer.

    Raises:
        GradprobeError: On a non-elementwise activation or a bad variance.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, activation in enumerate(activations):
        color = f"C{i}"
        curve = [chi(activation, s * s, sigma_b2, q_star(activation, s * s, sigma_b2).q_last_finite)
                 for s in _SIGMA_W]
        ax.plot(_SIGMA_W, curve, color=color, label=activation)
        for init, marker, name in _INIT_MARKERS:
            s2 = sigma_w2_for_init(init, None)
            ax.plot([np.sqrt(s2)], [chi(activation, s2, sigma_b2)], marker, color=color,
                    mfc="none", ms=8, label=name if i == 0 else None)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.text(_SIGMA_W[0], 1.05, "edge of chaos (chi = 1)", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis overlap
    ax.set_xticks(_SIGMA_W_TICKS, [f"{t:g}" for t in _SIGMA_W_TICKS])
    ax.set_xlabel("sigma_w  (Var W_ij = sigma_w^2 / fan_in)")
    ax.set_ylabel("chi = sigma_w^2 E[phi'(h)^2], h ~ N(0, q*)")
    ax.set_title(f"Per-layer gradient gain at the fixed point (sigma_b^2 = {sigma_b2:g})",
                 fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    return fig

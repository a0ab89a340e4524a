"""Activations, their derivatives, and the derivative chained over n layers (no training)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from gradprobe.errors import GradprobeError
from gradprobe.plots.style import arm_colors, new_figure, positive

__all__ = ["activation_curves", "activation_overlay", "derivative_decay"]

Curve = Mapping[str, Any]  # gradprobe.theory.activation_curve output
_X_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")


def _check(items: Sequence[Any], what: str) -> None:
    if not items:
        raise GradprobeError(f"{what}: the list is empty; pass at least one")


def _padded(values: np.ndarray) -> tuple[float, float]:
    """y limits around finite ``values`` with 8% room (the tangent must not stretch the axes)."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def activation_curves(curves: Sequence[Curve]) -> Figure:
    """Each activation (with its tangent at a point) beside its derivative, one row each.

    Requires: arrays from ``gradprobe.theory.activation_curve`` (no records).

    Args:
        curves: dicts with ``spec``, ``at``, ``x``, ``f``, ``df``, ``tangent`` (over ``tangent_x``, else ``x``).

    Returns:
        Figure with rows = activations, columns = phi(x) with tangent, phi'(x).

    Raises:
        GradprobeError: when ``curves`` is empty.
    """
    _check(curves, "curves")
    colors = arm_colors(c["spec"] for c in curves)
    fig, axes = new_figure(len(curves), 2, panel=(4.4, 2.8))
    for (f_ax, d_ax), curve in zip(axes, curves):
        name, at, x = curve["spec"], float(curve["at"]), np.asarray(curve["x"])
        fa = float(np.interp(at, x, curve["f"]))
        slope = float(np.interp(at, x, curve["df"]))
        f_ax.plot(x, curve["f"], color=colors[name], linewidth=2, label=f"{name}(x)")
        f_ax.plot(curve.get("tangent_x", x), curve["tangent"], color="black", linestyle="--", linewidth=1,
                  label=f"tangent at x={at:g} (slope {slope:.3g})")
        f_ax.plot([at], [fa], "o", color="black")
        f_ax.set_ylim(*_padded(np.asarray(curve["f"])))
        f_ax.set_title(f"{name}(x)")
        f_ax.set_ylabel("f(x)")
        f_ax.legend(fontsize="small", loc="upper left")
        d_ax.plot(x, curve["df"], color=colors[name], linewidth=2)
        d_ax.plot([at], [slope], "o", color="black")
        d_ax.annotate(f"f'({at:g}) = {slope:.3g}", (at, slope), textcoords="offset points",
                      xytext=(8, -14), fontsize="small")
        d_ax.set_ylim(*_padded(np.asarray(curve["df"])))
        d_ax.set_title(f"derivative {name}'(x), max {float(np.max(curve['df'])):.3g}")
        d_ax.set_ylabel("f'(x)")
        for ax in (f_ax, d_ax):
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.axvline(0, color="grey", linewidth=0.5)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("pre-activation x")
    fig.suptitle("activations, their tangent at a point, and their derivatives")
    return fig


def activation_overlay(curves: Sequence[Curve]) -> Figure:
    """Several activations on one axes and their derivatives on a second.

    Requires: arrays from ``gradprobe.theory.activation_curve`` (no records).

    Args:
        curves: dicts with ``spec``, ``x``, ``f``, ``df``.

    Returns:
        Figure with two panels: phi(x) of every activation, phi'(x) of every activation.

    Raises:
        GradprobeError: when ``curves`` is empty.
    """
    _check(curves, "curves")
    colors = arm_colors(c["spec"] for c in curves)
    fig, axes = new_figure(1, 2, panel=(4.8, 3.6))
    f_ax, d_ax = axes[0]
    for curve in curves:
        name = curve["spec"]
        f_ax.plot(curve["x"], curve["f"], color=colors[name], linewidth=2, label=name)
        d_ax.plot(curve["x"], curve["df"], color=colors[name], linewidth=2, label=name)
    f_ax.set_ylim(*_padded(np.concatenate([np.asarray(c["f"]) for c in curves])))
    for ax, what in ((f_ax, "f(x)"), (d_ax, "f'(x)")):
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("pre-activation x")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    f_ax.set_title("activation f(x)")
    d_ax.set_title("derivative f'(x)")
    d_ax.legend(title="activation", fontsize="small")
    fig.suptitle("activations compared")
    return fig


def derivative_decay(chains: Sequence[Mapping[str, Any]]) -> Figure:
    """Running product of n derivative factors phi'(x) for several activations and x (log y).

    Requires: ``gradprobe.theory.derivative_chain`` outputs (no records).

    Args:
        chains: dicts ``{"activation": str, "x": float, "products": list[float]}``, products
            for n = 1..steps.

    Returns:
        Figure with one log-y axes; colour and marker = activation, line style = x. A chain at 0
        (e.g. relu at x <= 0) cannot be drawn on a log axis and is marked so in the legend.

    Raises:
        GradprobeError: when ``chains`` is empty.
    """
    _check(chains, "chains")
    colors = arm_colors(c["activation"] for c in chains)
    xs = list(dict.fromkeys(float(c["x"]) for c in chains))
    names = list(colors)
    fig, axes = new_figure(1, 1, panel=(9.6, 4.6))
    ax = axes[0][0]
    for chain in chains:
        products = np.asarray(chain["products"], dtype=np.float64)
        n = np.arange(1, len(products) + 1)
        k = xs.index(float(chain["x"]))
        marker = _MARKERS[names.index(chain["activation"]) % len(_MARKERS)]
        zero = bool(np.any(products == 0))
        label = f"{chain['activation']}, x={float(chain['x']):g}"
        label += " (= 0 from n=1; not drawable on log axis)" if zero and products[0] == 0 else ""
        ax.plot(n, positive(products), color=colors[chain["activation"]],
                linestyle=_X_STYLES[k % len(_X_STYLES)], marker=marker, markersize=6,
                markerfacecolor="none", label=label)  # hollow: coinciding lines stay visible
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("number of layers n")
    ax.set_ylabel("product of f'(x) over n layers (log)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside right upper", fontsize="small", title="activation, pre-activation x")
    ax.set_title("how a gradient shrinks: chained activation derivatives")
    return fig

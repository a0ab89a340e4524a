"""Activation curves and chained derivatives: phi and phi' on a grid, and phi'(x) multiplied over n layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gradprobe.errors import GradprobeError
from gradprobe.models.activations import activation_spec

__all__ = ["activation_curve", "decay_chains", "derivative_chain"]


def activation_curve(spec: str, interval: tuple[float, float] = (-5.0, 5.0), n: int = 100,
                     tangent_at: float = 0.0, tangent_span: float | None = 1.7) -> dict[str, Any]:
    """Evaluate ``phi``, ``phi'`` and the tangent of ``phi`` at one point on an even grid.

    The defaults are the sigmoid-decay seed's: ``linspace(-5, 5, 100)``, the tangent at 0 drawn
    over ``linspace(a - 1.7, a + 1.7)`` (50 points).

    Args:
        spec: activation spec string, e.g. ``"sigmoid"`` or ``"leaky_relu:0.1"``.
        interval: ``(low, high)`` with low < high.
        n: number of grid points (>= 2).
        tangent_at: x of the tangent line.
        tangent_span: the tangent is drawn over ``tangent_at +- tangent_span``; None: over the grid.

    Returns:
        ``{"spec": canonical spec str, "at": tangent_at, "x", "f", "df", "tangent_x", "tangent"}``;
        ``x``, ``f``, ``df`` are float64 (n,), ``tangent_x`` float64 (50,) (or ``x`` when
        ``tangent_span`` is None) and ``tangent = f(a) + f'(a) (tangent_x - a)``.

    Raises:
        GradprobeError: on a bad spec, interval or n, or an activation without an elementwise
            derivative (maxout).
    """
    act = activation_spec(spec, "decay.activations")
    low, high = (float(v) for v in interval)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise GradprobeError(f"decay.interval: {interval!r} is not an interval; "
                             "allowed: two finite numbers low < high")
    if n < 2:
        raise GradprobeError(f"decay.points: {n!r} is too small; allowed: integers >= 2")
    if tangent_span is not None and not (np.isfinite(tangent_span) and tangent_span > 0):
        raise GradprobeError(f"decay.tangent_span: {tangent_span!r} is not a span; allowed: a finite number > 0 "
                             "or null")
    if act.fn is None or act.derivative is None:
        raise GradprobeError(f"decay.activations: {spec!r} has no elementwise derivative; "
                             "use an elementwise activation")
    x = torch.linspace(low, high, n, dtype=torch.float64)  # (n,)
    a = torch.tensor([float(tangent_at)], dtype=torch.float64)  # (1,)
    fa, dfa = float(act.fn(a)[0]), float(act.derivative(a)[0])
    x_np, at = x.numpy(), float(tangent_at)
    tan_x = x_np if tangent_span is None else np.linspace(at - tangent_span, at + tangent_span)  # (50,)
    return {
        "spec": str(act),
        "at": at,
        "x": x_np,
        "f": act.fn(x).numpy(),
        "df": act.derivative(x).numpy(),
        "tangent_x": tan_x,
        "tangent": fa + dfa * (tan_x - at),
    }


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

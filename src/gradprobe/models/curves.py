"""Sample an activation and its closed-form derivative over an interval, for plotting."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import GradprobeError
from .activations import activation_spec

__all__ = ["activation_curve"]


def activation_curve(spec: str, interval: tuple[float, float] = (-6.0, 6.0), n: int = 401,
                     tangent_at: float = 1.0) -> dict[str, Any]:
    """Evaluate ``phi``, ``phi'`` and the tangent of ``phi`` at one point on an even grid.

    Args:
        spec: activation spec string, e.g. ``"sigmoid"`` or ``"leaky_relu:0.1"``.
        interval: ``(low, high)`` with low < high.
        n: number of grid points (>= 2).
        tangent_at: x of the tangent line.

    Returns:
        ``{"spec": canonical spec str, "at": tangent_at, "x", "f", "df", "tangent"}``; the last
        four are float64 arrays of shape (n,), ``tangent = f(a) + f'(a) (x - a)``.

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
        raise GradprobeError(f"n: {n!r} is too small; allowed: integers >= 2")
    if act.fn is None or act.derivative is None:
        raise GradprobeError(f"decay.activations: {spec!r} has no elementwise derivative; "
                             "use an elementwise activation")
    x = torch.linspace(low, high, n, dtype=torch.float64)  # (n,)
    a = torch.tensor([float(tangent_at)], dtype=torch.float64)  # (1,)
    fa, dfa = float(act.fn(a)[0]), float(act.derivative(a)[0])
    x_np = x.numpy()
    return {
        "spec": str(act),
        "at": float(tangent_at),
        "x": x_np,
        "f": act.fn(x).numpy(),
        "df": act.derivative(x).numpy(),
        "tangent": fa + dfa * (x_np - float(tangent_at)),
    }

"""What theory predicts for gradient flow: the chained derivative of an activation."""

from __future__ import annotations

import torch

from gradprobe.errors import GradprobeError
from gradprobe.models.activations import activation_spec


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


__all__ = ["derivative_chain"]

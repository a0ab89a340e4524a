"""Per-step records of the optimizer step itself: whether a GradScaler skipped it, the loss scale, the overflow."""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity


def step_row(skipped: bool, scale: torch.Tensor | None) -> torch.Tensor:
    """Raw ``[skipped, loss_scale]`` on the scale's device (no host sync); scale None means 1 (no scaler)."""
    scale = torch.ones(()) if scale is None else scale.detach().float().reshape(())
    return torch.stack([torch.full_like(scale, float(skipped)), scale])  # (2,)


def last_nonfinite(grads: list[torch.Tensor]) -> tuple[int, torch.Tensor] | None:
    """The last of ``grads`` (in model order: the first in backward order) holding NaN/Inf, and its count of them.

    For a step the GradScaler skipped: one fused max-|g| pass over all gradients (exact: unlike a norm it
    cannot overflow on finite values) and one host read; None if every gradient is finite.

    Returns:
        ``(index into grads, 0-d count of its non-finite entries on its device)``, or None.
    """
    if not grads:
        return None
    peaks = torch.stack([p.to(grads[0].device, torch.float32)
                         for p in torch._foreach_norm(grads, ord=float("inf"))])  # (n,)
    bad = (~torch.isfinite(peaks)).nonzero().flatten().tolist()
    if not bad:
        return None
    g = grads[bad[-1]]
    return bad[-1], torch.count_nonzero(~torch.isfinite(g)).float()


class StepStats(Quantity):
    """``skipped`` and ``loss_scale`` of one optimizer step (kind step, layer "", tensor "optimizer")."""

    kind = R.STEP
    available: tuple[str, ...] = R.STEP_STATS

    def raw(self, inputs: Inputs) -> torch.Tensor:
        return inputs.value

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        return ()

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        return raw[:, [self.available.index(s) for s in stats]]


class OverflowStats(StepStats):
    """``first_nonfinite_grad`` of a skipped step: the count of NaN/Inf in the gradient found by :func:`last_nonfinite`.

    Kind step, at the parameter's own layer and tensor (not layer "", tensor "optimizer").
    """

    available = (R.FIRST_NONFINITE_GRAD,)


__all__ = ["OverflowStats", "StepStats", "last_nonfinite", "step_row"]

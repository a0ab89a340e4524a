"""Per-step records of the optimizer step itself: whether a GradScaler skipped it, and the loss scale."""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity


def step_row(skipped: bool, scale: torch.Tensor | None) -> torch.Tensor:
    """Raw ``[skipped, loss_scale]`` on the scale's device (no host sync); scale None means 1 (no scaler)."""
    scale = torch.ones(()) if scale is None else scale.detach().float().reshape(())
    return torch.stack([torch.full_like(scale, float(skipped)), scale])  # (2,)


class StepStats(Quantity):
    """``skipped`` and ``loss_scale`` of one optimizer step (kind step, layer "", tensor "optimizer")."""

    kind = R.STEP
    available = R.STEP_STATS

    def raw(self, inputs: Inputs) -> torch.Tensor:
        return inputs.value

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        return ()

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        return raw[:, [self.available.index(s) for s in stats]]


__all__ = ["StepStats", "step_row"]

"""||w_after - w_before|| / ||w_before||: the relative size of the step the optimizer actually took."""

from __future__ import annotations

import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity


def update_ratio(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Relative update size; ``inf`` when the weight was exactly zero and moved, 0 when neither moved."""
    diff = torch.linalg.vector_norm((after.detach() - before).float())
    base = torch.linalg.vector_norm(before.float())
    return torch.where(base > 0, diff / base, torch.where(diff > 0, torch.inf, 0.0))


class UpdateRatio(Quantity):
    """Update ratio of a parameter for the step between a snapshot and now."""

    kind = R.WEIGHT
    available = (R.UPDATE_RATIO,)
    needs = frozenset({"previous"})

    def compute(self, inputs: Inputs) -> torch.Tensor:
        if inputs.previous is None:
            raise RuntimeError("UpdateRatio needs a weight snapshot")
        return update_ratio(inputs.previous, inputs.value).reshape(1).to(torch.float32)


__all__ = ["UpdateRatio", "update_ratio"]

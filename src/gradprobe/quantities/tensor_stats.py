"""Summary statistics of a tensor (gradients, weights, deltas) from a handful of reductions.

Intermediates are shared: ``|x|`` feeds mean_abs and max_abs, ``x.x`` feeds
norm and std. Measured on CPU, ``torch.isfinite(x).sum()`` costs more than
all the other statistics together, so on CPU (where reading a scalar is free)
non-finite entries are only counted when ``sum|x|`` is itself non-finite, which
is exactly when there are any.
"""

from __future__ import annotations

import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity


def _nonfinite(x: torch.Tensor, abs_sum: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" and bool(torch.isfinite(abs_sum)):
        return torch.zeros((), dtype=torch.float32)
    return torch.count_nonzero(x - x).to(torch.float32)  # x - x is NaN exactly where x is not finite


def tensor_stats(x: torch.Tensor, stats: tuple[str, ...]) -> torch.Tensor:
    """Compute ``stats`` (names from :data:`records.TENSOR_STATS`) of ``x``; shape ``(len(stats),)``."""
    x = x.detach().reshape(-1)  # (n,)
    x = x if x.dtype == torch.float64 else x.float()  # half precision would lose the small stats
    n = x.numel()
    out: dict[str, torch.Tensor] = {}
    need = set(stats)
    total = x.sum()
    mean = total / n
    if need & {R.MEAN_ABS, R.MAX_ABS, R.NONFINITE, R.SUM_ABS_PER_SHAPE}:
        ax = x.abs()
        abs_sum = ax.sum()
        out[R.MEAN_ABS] = abs_sum / n
        out[R.SUM_ABS_PER_SHAPE] = abs_sum  # divided by sum(shape) in the quantity that knows the shape
        if R.MAX_ABS in need:
            out[R.MAX_ABS] = ax.amax()
        if R.NONFINITE in need:
            out[R.NONFINITE] = _nonfinite(x, abs_sum)
    if need & {R.NORM, R.STD}:
        sq = torch.dot(x, x)
        out[R.NORM] = sq.sqrt()
        # Unbiased variance from the sum of squares; clamp the tiny negatives rounding can give.
        var = (sq - n * mean * mean).clamp_min(0) / max(n - 1, 1)
        out[R.STD] = var.sqrt()
    out[R.MEAN] = mean
    if R.ZERO_FRAC in need:
        out[R.ZERO_FRAC] = (n - torch.count_nonzero(x)).to(torch.float32) / n
    return torch.stack([out[s].to(torch.float32) for s in stats])


class TensorStats(Quantity):
    """Statistics of a tensor's values, for kinds grad, weight and delta."""

    available = R.TENSOR_STATS

    def __init__(self, kind: str, stats: tuple[str, ...]) -> None:
        self.kind = kind
        super().__init__(stats)

    def compute(self, inputs: Inputs) -> torch.Tensor:
        values = tensor_stats(inputs.value, self.stats)
        if R.SUM_ABS_PER_SHAPE in self.stats:
            i = self.stats.index(R.SUM_ABS_PER_SHAPE)
            values[i] = values[i] / max(sum(inputs.value.shape), 1)
        return values


__all__ = ["TensorStats", "tensor_stats"]

"""Summary statistics of a tensor (gradients, weights, deltas, outputs) from a handful of reductions.

On the device each tensor costs a few reductions: ``sum x``, ``sum |x|``, ``max |x|``, the centred
sum of squares ``sum (x - mean)^2`` (two-pass, so ``std`` stays exact when ``|mean| >> std``), the
non-zero count and the non-finite count. Measured on CPU, ``torch.isfinite(x).sum()`` costs more than
all the others together, so on CPU (where reading a scalar is free) non-finite entries are only
counted when ``sum x`` is itself non-finite, which is exactly when there are any.
"""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity

# Raw reductions, in the order they are stacked.
SUM, SUM_ABS, SUM_SQ_DEV, MAX_ABS, NONZERO, NONFINITE = "sum", "sum_abs", "ssd", "max_abs", "nonzero", "nonfinite"
_NEEDS = {
    R.MEAN: (SUM,), R.MEAN_ABS: (SUM_ABS,), R.SUM_ABS_PER_SHAPE: (SUM_ABS,), R.STD: (SUM, SUM_SQ_DEV),
    R.NORM: (SUM, SUM_SQ_DEV), R.MAX_ABS: (MAX_ABS,), R.ZERO_FRAC: (NONZERO,), R.NONFINITE: (SUM, NONFINITE),
}
_ORDER = (SUM, SUM_ABS, SUM_SQ_DEV, MAX_ABS, NONZERO, NONFINITE)


def moments_for(stats: tuple[str, ...]) -> tuple[str, ...]:
    """The raw reductions that ``stats`` need, in stacking order."""
    needed = {m for s in stats for m in _NEEDS[s]}
    return tuple(m for m in _ORDER if m in needed)


def tensor_moments(x: torch.Tensor, moments: tuple[str, ...]) -> torch.Tensor:
    """Stack the requested raw reductions of ``x``; shape ``(len(moments),)``, on ``x``'s device."""
    # No reshape: Linear weight gradients are often transposed views, and flattening copies them.
    x = x.detach()
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()  # half precision loses small stats
    parts: list[torch.Tensor] = []
    total = x.sum() if SUM in moments else None
    ax = x.abs() if SUM_ABS in moments or MAX_ABS in moments else None
    for m in moments:
        if m == SUM:
            parts.append(total)  # type: ignore[arg-type]
        elif m == SUM_ABS:
            parts.append(ax.sum())  # type: ignore[union-attr]
        elif m == SUM_SQ_DEV:
            dev = (x - total / x.numel()).reshape(-1)  # type: ignore[operator]  # fresh, contiguous: a view
            parts.append(torch.dot(dev, dev))
        elif m == MAX_ABS:
            parts.append(ax.amax())  # type: ignore[union-attr]
        elif m == NONZERO:
            parts.append(torch.count_nonzero(x).to(x.dtype))
        elif x.device.type == "cpu" and bool(torch.isfinite(total)):  # type: ignore[arg-type]
            parts.append(torch.zeros((), dtype=x.dtype))
        else:
            parts.append(torch.count_nonzero(x - x).to(x.dtype))  # x - x is NaN exactly where x is not finite
    return torch.stack(parts)


def finalize_moments(raw: np.ndarray, moments: tuple[str, ...], numel: np.ndarray, shape_sum: np.ndarray,
                     stats: tuple[str, ...]) -> np.ndarray:
    """Statistics ``(n, len(stats))`` from raw rows ``(n, len(moments))`` of tensors with ``numel`` entries."""
    col = {m: raw[:, i] for i, m in enumerate(moments)}
    n = numel.astype(np.float64)
    out = np.empty((raw.shape[0], len(stats)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, stat in enumerate(stats):
            if stat == R.MEAN:
                out[:, j] = col[SUM] / n
            elif stat == R.MEAN_ABS:
                out[:, j] = col[SUM_ABS] / n
            elif stat == R.SUM_ABS_PER_SHAPE:
                out[:, j] = col[SUM_ABS] / np.maximum(shape_sum, 1)
            elif stat == R.STD:
                out[:, j] = np.sqrt(col[SUM_SQ_DEV] / np.maximum(n - 1, 1))
            elif stat == R.NORM:
                out[:, j] = np.sqrt(col[SUM_SQ_DEV] + col[SUM] ** 2 / n)  # sum x^2 = ssd + n mean^2
            elif stat == R.MAX_ABS:
                out[:, j] = col[MAX_ABS]
            elif stat == R.ZERO_FRAC:
                out[:, j] = (n - col[NONZERO]) / n
            else:  # R.NONFINITE
                out[:, j] = col[NONFINITE]
    return out


def tensor_stats(x: torch.Tensor, stats: tuple[str, ...]) -> np.ndarray:
    """Compute ``stats`` (names from :data:`records.TENSOR_STATS`) of one tensor, on the host."""
    moments = moments_for(stats)
    raw = tensor_moments(x, moments).detach().cpu().double().numpy()[None, :]
    return finalize_moments(raw, moments, np.array([x.numel()]), np.array([sum(x.shape)]), stats)[0]


class TensorStats(Quantity):
    """Statistics of a tensor's values, for kinds grad, weight and delta."""

    available = R.TENSOR_STATS

    def __init__(self, kind: str, stats: tuple[str, ...]) -> None:
        self.kind = kind
        super().__init__(stats)
        self.moments = moments_for(self.stats)

    def raw(self, inputs: Inputs) -> torch.Tensor:
        return tensor_moments(inputs.value, self.moments)

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        return (float(inputs.value.numel()), float(sum(inputs.value.shape)))

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        return finalize_moments(raw, self.moments, meta[:, 0], meta[:, 1], stats)


__all__ = ["TensorStats", "finalize_moments", "moments_for", "tensor_moments", "tensor_stats"]

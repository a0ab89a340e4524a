"""Fixed-bin histograms of a tensor over its own finite range, computed without a host sync."""

from __future__ import annotations

import numpy as np
import torch


def histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Pack ``[lo, hi, count_0 .. count_{bins-1}, nonfinite]`` into one float vector of ``bins + 3``.

    The range is the finite min/max of ``x``; non-finite entries are counted
    apart instead of breaking the binning. Bin edges are ``linspace(lo, hi, bins + 1)``.
    """
    flat = x.detach().reshape(-1).float()  # (n,)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.inf).amin()
    hi = torch.where(finite, flat, -torch.inf).amax()
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    hi = torch.where(torch.isfinite(hi), hi, 0.0)
    flat_range = hi <= lo  # a constant tensor gets the unit range centred on its value
    lo, hi = torch.where(flat_range, lo - 0.5, lo), torch.where(flat_range, hi + 0.5, hi)
    # float64 so that exploding values (|x| near float32's max) do not overflow hi - lo.
    scaled = (flat.double() - lo.double()) / (hi.double() - lo.double()) * bins
    index = torch.nan_to_num(scaled, nan=0.0).floor().clamp(0, bins - 1)
    index = torch.where(finite, index, float(bins)).long()  # bin `bins` collects non-finite entries
    counts = torch.zeros(bins + 1, dtype=torch.float32, device=flat.device)
    counts.scatter_add_(0, index, torch.ones_like(flat))
    return torch.cat([torch.stack([lo, hi]), counts])


def unpack_histogram(packed: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Split a packed histogram into ``(edges (bins+1,), counts (bins,), nonfinite)`` on the host."""
    edges = np.linspace(float(packed[0]), float(packed[1]), bins + 1)
    counts = packed[2 : 2 + bins].astype(np.int64)
    return edges, counts, int(packed[2 + bins])


__all__ = ["histogram", "unpack_histogram"]

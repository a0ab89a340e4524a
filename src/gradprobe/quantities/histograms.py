"""Fixed-bin histograms of a tensor over its own finite range, computed without a host sync."""

from __future__ import annotations

import numpy as np
import torch


def histogram(x: torch.Tensor, bins: int, members: int | None = None) -> torch.Tensor:
    """Pack ``[lo, hi, count_0 .. count_{bins-1}, nonfinite]`` into one float vector of ``bins + 3``.

    The range is the finite min/max of ``x``; non-finite entries are counted
    apart instead of breaking the binning. Bin edges are ``linspace(lo, hi, bins + 1)``.
    With ``members=M``, ``x`` holds M members along its leading dimension and each gets its own
    histogram over its own range: ``(M, bins + 3)``.
    """
    flat = x.detach().reshape(-1 if members is None else (members, -1)).float()  # (n,) or (M, n)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.inf).amin(-1, keepdim=True)  # (1,) or (M, 1)
    hi = torch.where(finite, flat, -torch.inf).amax(-1, keepdim=True)
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    hi = torch.where(torch.isfinite(hi), hi, 0.0)
    flat_range = hi <= lo  # a constant tensor gets the unit range centred on its value
    lo, hi = torch.where(flat_range, lo - 0.5, lo), torch.where(flat_range, hi + 0.5, hi)
    # float64 so that exploding values (|x| near float32's max) do not overflow hi - lo.
    scaled = (flat.double() - lo.double()) / (hi.double() - lo.double()) * bins
    index = torch.nan_to_num(scaled, nan=0.0).floor().clamp(0, bins - 1)
    index = torch.where(finite, index, float(bins)).long()  # bin `bins` collects non-finite entries
    counts = torch.zeros(*flat.shape[:-1], bins + 1, dtype=torch.float32, device=flat.device)
    counts.scatter_add_(-1, index, torch.ones_like(flat))
    return torch.cat([lo, hi, counts], dim=-1)  # (bins + 3,) or (M, bins + 3)


def unpack_histograms(packed: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split packed histograms ``(n, bins + 3)`` into ``(edges (n, bins+1), counts (n, bins), nonfinite (n,))``."""
    edges = np.linspace(packed[:, 0].astype(np.float64), packed[:, 1].astype(np.float64), bins + 1, axis=1)
    counts = packed[:, 2 : 2 + bins].astype(np.int64)
    return edges, counts, packed[:, 2 + bins].astype(np.int64)


def unpack_histogram(packed: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Split a packed histogram into ``(edges (bins+1,), counts (bins,), nonfinite)`` on the host."""
    edges, counts, nonfinite = unpack_histograms(np.asarray(packed)[None], bins)
    return edges[0], counts[0], int(nonfinite[0])


__all__ = ["histogram", "unpack_histogram", "unpack_histograms"]

"""Per-model statistics of an ensemble, each a reduction over ``(M, -1)``: the probe's numbers for M models at once.

The formulas are the single-model ones (``quantities.tensor_stats``, ``activation_stats``,
``histograms``, ``update_ratio``) with a leading model dimension; tests compare the two.
"""

from __future__ import annotations

import torch

from gradprobe import records as R


def batched_tensor_stats(x: torch.Tensor, stats: tuple[str, ...], shape_sum: int = 1) -> torch.Tensor:
    """``tensor_stats`` of every row of ``x`` (M, n): shape ``(M, len(stats))``, float32.

    Args:
        x: one flattened tensor per model, (M, n).
        stats: names from :data:`records.TENSOR_STATS`.
        shape_sum: ``sum(shape)`` of one model's tensor, the divisor of ``sum_abs_per_shape``
            (1 leaves it undivided, as activation statistics do).
    """
    x = x.detach().float()  # (M, n)
    n = x.shape[1]
    need = set(stats)
    out: dict[str, torch.Tensor] = {}
    if need & {R.MEAN, R.STD}:
        out[R.MEAN] = x.sum(1) / n
    if need & {R.MEAN_ABS, R.MAX_ABS, R.SUM_ABS_PER_SHAPE}:
        ax = x.abs()
        abs_sum = ax.sum(1)
        if R.MEAN_ABS in need:
            out[R.MEAN_ABS] = abs_sum / n
        if R.SUM_ABS_PER_SHAPE in need:
            out[R.SUM_ABS_PER_SHAPE] = abs_sum / max(shape_sum, 1)
        if R.MAX_ABS in need:
            out[R.MAX_ABS] = ax.amax(1)
    if R.NONFINITE in need:
        out[R.NONFINITE] = torch.isnan(x - x).sum(1, dtype=torch.float32)  # NaN exactly where x is not finite
    if need & {R.NORM, R.STD}:
        sq = torch.linalg.vecdot(x, x)  # (M,)
        if R.NORM in need:
            out[R.NORM] = sq.sqrt()
        if R.STD in need:
            mean = out[R.MEAN]
            out[R.STD] = ((sq - n * mean * mean).clamp_min(0) / max(n - 1, 1)).sqrt()
    if R.ZERO_FRAC in need:
        out[R.ZERO_FRAC] = (n - torch.count_nonzero(x, dim=1)).float() / n
    return torch.stack([out[s] for s in stats], dim=1)


class Segments:
    """Several tensors laid side by side in a flat ``(M, P)`` tensor: per-tensor stats in one reduction each.

    Args:
        bounds: ``(start, stop)`` columns of each tensor; other columns are ignored.
        width: P.
        shape_sums: ``sum(shape)`` of each tensor (divisor of ``sum_abs_per_shape``).
        device: where the index lives.
    """

    def __init__(self, bounds: list[tuple[int, int]], width: int, shape_sums: list[int],
                 device: torch.device | str = "cpu") -> None:
        lengths, keep, at = [], [], 0
        for start, stop in sorted(bounds):
            if start > at:  # columns of tensors not recorded form segments of their own, dropped
                lengths.append(start - at)
            keep.append(len(lengths))
            lengths.append(stop - start)
            at = stop
        if at < width:
            lengths.append(width - at)
        order = sorted(range(len(bounds)), key=lambda i: bounds[i])
        chosen = [0] * len(bounds)
        for rank, i in enumerate(order):
            chosen[i] = keep[rank]
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.keep = None if chosen == list(range(len(lengths))) else torch.tensor(chosen, device=device)
        self.count = torch.tensor([stop - start for start, stop in bounds], dtype=torch.float32, device=device)
        self.shape_sum = torch.tensor([max(s, 1) for s in shape_sums], dtype=torch.float32, device=device)

    def _reduce(self, x: torch.Tensor, how: str) -> torch.Tensor:
        out = torch.segment_reduce(x, how, lengths=self.lengths.expand(x.shape[0], -1), axis=1)
        return out if self.keep is None else out.index_select(1, self.keep)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tensor sums of ``x`` (M, P): (M, tensors)."""
        return self._reduce(x, "sum")

    def amax(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tensor maxima of ``x`` (M, P): (M, tensors)."""
        return self._reduce(x, "max")

    def stats(self, x: torch.Tensor, stats: tuple[str, ...]) -> torch.Tensor:
        """``tensor_stats`` of every tensor in every row: ``(M, tensors * len(stats))``, tensor-major."""
        x = x.detach().float()  # (M, P)
        n, need = self.count, set(stats)
        out: dict[str, torch.Tensor] = {}
        if need & {R.MEAN, R.STD}:
            out[R.MEAN] = self.sum(x) / n
        if need & {R.MEAN_ABS, R.MAX_ABS, R.SUM_ABS_PER_SHAPE}:
            ax = x.abs()
            abs_sum = self.sum(ax)
            out[R.MEAN_ABS] = abs_sum / n
            out[R.SUM_ABS_PER_SHAPE] = abs_sum / self.shape_sum
            if R.MAX_ABS in need:
                out[R.MAX_ABS] = self.amax(ax)
        if R.NONFINITE in need:
            out[R.NONFINITE] = self.sum(torch.isnan(x - x).float())
        if need & {R.NORM, R.STD}:
            sq = self.sum(x * x)
            out[R.NORM] = sq.sqrt()
            if R.STD in need:
                out[R.STD] = ((sq - n * out[R.MEAN] * out[R.MEAN]).clamp_min(0) / (n - 1).clamp_min(1)).sqrt()
        if R.ZERO_FRAC in need:
            out[R.ZERO_FRAC] = self.sum((x == 0).float()) / n
        return torch.stack([out[s] for s in stats], dim=2).reshape(x.shape[0], -1)

    def update_ratio(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``update_ratio`` of every tensor: (M, tensors), from flat weights before and after a step."""
        diff = (after - before).float()
        diff, base = self.sum(diff * diff).sqrt(), self.sum(before * before).sqrt()
        return torch.where(base > 0, diff / base, torch.where(diff > 0, torch.inf, 0.0))


def dead_fraction(out: torch.Tensor) -> torch.Tensor:
    """Per model, the fraction of units <= 0 for every example of the batch; ``out`` is (M, B, units)."""
    return (out.detach().amax(dim=1) <= 0).float().mean(1)


def saturated_fraction(out: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per model, the fraction of entries ``<= low`` or ``>= high`` (thresholds (M,), float32)."""
    x = out.detach().reshape(out.shape[0], -1)  # (M, n)
    return ((x <= low.unsqueeze(1)) | (x >= high.unsqueeze(1))).float().mean(1)


def batched_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``histograms.histogram`` of every row of ``x`` (M, n): packed ``(M, bins + 3)``."""
    flat = x.detach().float()  # (M, n)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.inf).amin(1)
    hi = torch.where(finite, flat, -torch.inf).amax(1)
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    hi = torch.where(torch.isfinite(hi), hi, 0.0)
    flat_range = hi <= lo
    lo, hi = torch.where(flat_range, lo - 0.5, lo), torch.where(flat_range, hi + 0.5, hi)
    index = ((flat - lo.unsqueeze(1)) / (hi - lo).unsqueeze(1) * bins).floor().clamp(0, bins - 1)
    index = torch.where(finite, index, float(bins)).long()
    counts = torch.zeros(flat.shape[0], bins + 1, dtype=torch.float32)
    counts.scatter_add_(1, index, torch.ones_like(flat))
    return torch.cat([lo.unsqueeze(1), hi.unsqueeze(1), counts], dim=1)


__all__ = ["Segments", "batched_histogram", "batched_tensor_stats", "dead_fraction", "saturated_fraction"]

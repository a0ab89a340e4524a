"""Per-model statistics of an ensemble: raw reductions over ``(M, n)`` rows on the device, finalised on the host.

The split is the probe's (``quantities``): each recorded tensor costs a few reductions per step
(``sum``, ``sum |x|``, ``||x||``, the two-pass ``sum (x - mean)^2``, ...), stacked into one row per
step; divisions and square roots run later with NumPy in float64 over many steps at once. Tests
compare the results with the single-model probe.
"""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.activation_stats import Family, flat_mask

# Raw reductions per tensor and model, in stacking order.
SUM, SUM_ABS, L2, SSD, MAX_ABS, NONZERO, DIFF, NONFINITE = (
    "sum", "sum_abs", "l2", "ssd", "max_abs", "nonzero", "diff", "nonfinite")
_ORDER = (SUM, SUM_ABS, L2, SSD, MAX_ABS, NONZERO, DIFF, NONFINITE)
_NEEDS = {
    R.MEAN: (SUM,), R.MEAN_ABS: (SUM_ABS,), R.SUM_ABS_PER_SHAPE: (SUM_ABS,), R.STD: (SUM, SSD), R.NORM: (L2,),
    R.MAX_ABS: (MAX_ABS,), R.ZERO_FRAC: (NONZERO,), R.NONFINITE: (SUM_ABS, NONFINITE), R.UPDATE_RATIO: (L2, DIFF),
}


def moments_for(stats: tuple[str, ...]) -> tuple[str, ...]:
    """The raw reductions ``stats`` need, in stacking order (stats without any, e.g. dead_frac, pass through)."""
    needed = {m for s in stats for m in _NEEDS.get(s, ())}
    return tuple(m for m in _ORDER if m in needed)


def _columns(x: torch.Tensor, moments: tuple[str, ...]) -> list[torch.Tensor]:
    """Per-row reductions (M,) of ``x`` (M, n) for ``moments`` (without the non-finite count)."""
    cols: list[torch.Tensor] = []
    total = x.sum(1) if SUM in moments else None
    for m in moments:
        if m == SUM:
            cols.append(total)  # type: ignore[arg-type]
        elif m == SUM_ABS:
            cols.append(torch.linalg.vector_norm(x, 1, dim=1))
        elif m == L2:
            cols.append(torch.linalg.vector_norm(x, 2, dim=1))
        elif m == SSD:
            dev = x - (total / x.shape[1]).unsqueeze(1)  # type: ignore[operator, union-attr]
            cols.append(torch.linalg.vecdot(dev, dev))
        elif m == MAX_ABS:
            cols.append(x.abs().amax(1))
        elif m == NONZERO:
            cols.append(torch.count_nonzero(x, dim=1).to(x.dtype))
    return cols


def _scaled_columns(x: torch.Tensor, moments: tuple[str, ...]) -> list[torch.Tensor]:
    """``_columns`` computed on each row divided by its max |x| and scaled back in float64: no overflow."""
    peak = x.abs().amax(1)  # (M,)
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak)).double()
    cols = [c.double() for c in _columns(x / scale.to(x.dtype).unsqueeze(1), moments)]
    power = {SUM: 1, SUM_ABS: 1, L2: 1, MAX_ABS: 1, SSD: 2, NONZERO: 0}
    return [c * scale ** power[m] for c, m in zip(cols, moments)]


def row_moments(rows: list[torch.Tensor], moments: tuple[str, ...]) -> torch.Tensor:
    """Raw reductions of every row of each tensor in ``rows`` ((M, n_t) each): ``(M, T, len(moments))``.

    One host read checks that every reduction is finite; if some is not, non-finite entries are
    counted (exactly where there are any) and, the probe's way (``tensor_stats``), reductions of
    finite rows that overflowed float32 are redone scaled, in float64. ``DIFF`` is not a reduction
    of one tensor (see ``Recorder``).
    """
    plain = tuple(m for m in moments if m != NONFINITE)
    m_, t = rows[0].shape[0], len(rows)
    xs = [x.detach() for x in rows]
    raw = torch.stack([c for x in xs for c in _columns(x, plain)], dim=1).view(m_, t, len(plain))
    finite = bool(torch.isfinite(raw).all())
    counts = raw.new_zeros(m_, t, 1)
    if not finite:  # x - x is NaN exactly where x is not finite
        counts = torch.stack([torch.isnan(x - x).sum(1).to(raw.dtype) for x in xs], dim=1).unsqueeze(2)
        raw = torch.stack([c for x in xs for c in _scaled_columns(x, plain)], dim=1).view(m_, t, len(plain))
        counts = counts.to(raw.dtype)
    return torch.cat([raw, counts], dim=2) if NONFINITE in moments else raw


def finalize(raw: np.ndarray, moments: tuple[str, ...], n: np.ndarray, shape_sum: np.ndarray,
             stats: tuple[str, ...]) -> np.ndarray:
    """Statistics ``(..., T, len(stats))`` from raw ``(..., T, k)``: moments first, then pass-through columns.

    Args:
        raw: raw reductions (float64), then one column per stat without moments (e.g. dead_frac).
        moments: the names of the first ``len(moments)`` columns.
        n: entries per tensor, broadcastable to ``raw[..., 0]``.
        shape_sum: ``sum(shape)`` per tensor, the divisor of ``sum_abs_per_shape``.
        stats: the statistics to return, in order.
    """
    col = {m: raw[..., i] for i, m in enumerate(moments)}
    extra = iter(range(len(moments), raw.shape[-1]))
    n = n.astype(np.float64)
    out = np.empty(raw.shape[:-1] + (len(stats),))
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, stat in enumerate(stats):
            if stat == R.MEAN:
                out[..., j] = col[SUM] / n
            elif stat == R.MEAN_ABS:
                out[..., j] = col[SUM_ABS] / n
            elif stat == R.SUM_ABS_PER_SHAPE:
                out[..., j] = col[SUM_ABS] / np.maximum(shape_sum, 1)
            elif stat == R.STD:
                out[..., j] = np.sqrt(col[SSD] / np.maximum(n - 1, 1))
            elif stat == R.NORM:
                out[..., j] = col[L2]
            elif stat == R.MAX_ABS:
                out[..., j] = col[MAX_ABS]
            elif stat == R.ZERO_FRAC:
                out[..., j] = (n - col[NONZERO]) / n
            elif stat == R.NONFINITE:
                out[..., j] = col[NONFINITE]
            elif stat == R.UPDATE_RATIO:  # inf when a zero weight (a zero-initialised bias) moved, 0 if neither
                diff, base = col[DIFF], col[L2]
                out[..., j] = np.where(base > 0, diff / base, np.where(diff > 0, np.inf, 0.0))
            else:
                out[..., j] = raw[..., next(extra)]
    return out


def dead_fraction(source: torch.Tensor, out: torch.Tensor, families: list[Family | None]) -> torch.Tensor:
    """Per model, the fraction of units whose derivative is ~0 for every example: the probe's definition.

    ``source``/``out`` are the activation's input and output (M, B, units); ``families[m]`` is model
    m's activation family (models without a dead region get 0; the recorder drops their column).
    """
    frac = out.new_zeros(out.shape[0])  # (M,)
    start = 0
    for stop in range(1, len(families) + 1):  # one op per run of equal families
        if stop < len(families) and families[stop] == families[start]:
            continue
        family = families[start]
        if family is not None and family.dead is not None:
            mask = flat_mask(family.dead, source[start:stop], out[start:stop])  # (m, B, units)
            frac[start:stop] = mask.all(dim=1).float().mean(1)
        start = stop
    return frac


def negative_fraction(source: torch.Tensor) -> torch.Tensor:
    """Per model, the fraction of entries with negative input; ``source`` is (M, B, units)."""
    return (source.detach().reshape(source.shape[0], -1) < 0).float().mean(1)


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
    # float64, as the probe: exploding values (|x| near float32's max) must not overflow hi - lo
    lo64, hi64 = lo.double().unsqueeze(1), hi.double().unsqueeze(1)
    scaled = (flat.double() - lo64) / (hi64 - lo64) * bins
    index = torch.nan_to_num(scaled, nan=0.0).floor().clamp(0, bins - 1)
    index = torch.where(finite, index, float(bins)).long()
    counts = torch.zeros(flat.shape[0], bins + 1, dtype=torch.float32, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(flat))
    return torch.cat([lo.unsqueeze(1), hi.unsqueeze(1), counts], dim=1)


__all__ = ["batched_histogram", "dead_fraction", "finalize", "moments_for", "negative_fraction", "row_moments",
           "saturated_fraction"]

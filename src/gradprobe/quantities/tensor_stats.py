"""Summary statistics of a tensor (gradients, weights, deltas, outputs) from a handful of reductions.

On the device each tensor costs a few reductions: ``sum x``, ``sum |x|``, ``max |x|``, the centred
norm ``||x - mean||`` (two-pass, so ``std`` stays exact when ``|mean| >> std``; kept as a norm, not
its square, so that it cannot overflow where the statistics do not), the non-zero count and the
non-finite count. Finite tensors never give non-finite statistics: where a float32 reduction of
large finite values overflows (squares above ~1e19, sums near float32's max), the reductions are
redone on ``x / max|x|`` and the scale is multiplied back in float64. On CPU that happens only when a
reduction came out non-finite (reading it is free there); on accelerators, where reading it would be a
host sync, always. Measured on CPU, ``torch.isfinite(x).sum()`` costs more than all the other
reductions together, so there non-finite entries are only counted when a reduction is non-finite,
which any NaN/Inf entry makes it; the count is exact either way. A group of tensors (all gradients
of a step) is reduced tensor by tensor but stacked and checked once (:func:`group_moments`): on small
models the cost is op dispatch, and the per-tensor stack/check/count ops were half of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity

# Raw reductions, in the order they are stacked.
SUM, SUM_ABS, ROOT_SSD, MAX_ABS, NONZERO, NONFINITE = "sum", "sum_abs", "root_ssd", "max_abs", "nonzero", "nonfinite"
ROOT_SS = "root_ss"  # the plain L2 norm: one op where the norm is wanted without the std
_NEEDS = {
    R.MEAN: (SUM,), R.MEAN_ABS: (SUM_ABS,), R.SUM_ABS_PER_SHAPE: (SUM_ABS,), R.STD: (SUM, ROOT_SSD),
    R.NORM: (ROOT_SS,), R.MAX_ABS: (MAX_ABS,), R.ZERO_FRAC: (NONZERO,), R.NONFINITE: (SUM, NONFINITE),
}
_ORDER = (SUM, SUM_ABS, ROOT_SSD, ROOT_SS, MAX_ABS, NONZERO, NONFINITE)
LINEAR = frozenset((SUM, SUM_ABS, ROOT_SSD, ROOT_SS, MAX_ABS))  # reductions that scale like x (the rest are counts)


def moments_for(stats: tuple[str, ...]) -> tuple[str, ...]:
    """The raw reductions that ``stats`` need, in stacking order.

    The norm comes from the std's reductions when those are computed anyway (``sum x^2 = ssd + n mean^2``),
    else from one plain L2 norm (two ops fewer per tensor than sum and centred norm).
    """
    needed = {m for s in stats for m in _NEEDS[s]}
    if ROOT_SSD in needed:
        needed.discard(ROOT_SS)
    return tuple(m for m in _ORDER if m in needed)


def _reduce(x: torch.Tensor, moments: tuple[str, ...], dim: int | None = None) -> list[torch.Tensor]:
    """The reductions of ``x`` in ``moments`` (which holds no non-finite count), in ``x``'s dtype.

    ``dim=None`` reduces all of ``x`` (0-d results); ``dim=1`` reduces each row of a member block
    ``(M, n)`` (results ``(M,)``, one per member).
    """
    total = x.sum(dim) if SUM in moments else None
    ax = x.abs() if SUM_ABS in moments or MAX_ABS in moments else None
    parts: list[torch.Tensor] = []
    for m in moments:
        if m == SUM:
            parts.append(total)  # type: ignore[arg-type]
        elif m == SUM_ABS:
            parts.append(ax.sum(dim))  # type: ignore[union-attr]
        elif m == ROOT_SSD:  # x - mean is fresh and contiguous: the norm reads it as a flat view
            mean = total / x.numel() if dim is None else total[:, None] / x.shape[1]  # type: ignore[index, operator]
            parts.append(torch.linalg.vector_norm(x - mean, dim=dim))
        elif m == ROOT_SS:
            parts.append(torch.linalg.vector_norm(x, dim=dim))
        elif m == MAX_ABS:
            parts.append(ax.amax() if dim is None else ax.amax(dim))  # type: ignore[union-attr]
        else:  # NONZERO
            parts.append(torch.count_nonzero(x, dim).to(x.dtype))
    return parts


def _scaled(x: torch.Tensor, moments: tuple[str, ...], dim: int | None = None) -> torch.Tensor:
    """Reductions of ``x`` computed on ``x / max|x|`` (no overflow), in float64 (float32 on MPS), no count.

    Shape ``(len(moments),)``, or ``(M, len(moments))`` with ``dim=1`` (each member scaled by its own max).
    """
    acc = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
    lead = () if dim is None else (x.shape[0],)
    if not moments:
        return x.new_zeros((*lead, 0), dtype=acc)
    peak = x.abs().amax() if dim is None else x.abs().amax(dim, keepdim=True)  # () or (M, 1)
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    raw = torch.stack(_reduce(x / scale, moments, dim), dim=-1).to(acc)  # (k,) or (M, k)
    linear = torch.tensor([m in LINEAR for m in moments], device=x.device)
    return torch.where(linear, raw * scale.to(acc), raw)


def _prepared(x: torch.Tensor, members: int | None = None) -> torch.Tensor:
    # No reshape of a single tensor: Linear weight gradients are often transposed views, and flattening
    # copies them. A member block becomes (M, n), a view for the ensemble's row slices and outputs.
    x = x.detach()
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()  # half precision loses small stats
    return x if members is None else x.reshape(members, -1)


def _exact(x: torch.Tensor, moments: tuple[str, ...], dim: int | None = None) -> torch.Tensor:
    """One tensor's row, re-reduced on ``x / max|x|`` where that is needed, and its exact non-finite count.

    With ``dim=1``, rows ``(M, k)`` of a member block, without reading the host (for accelerators).
    """
    plain = tuple(m for m in moments if m != NONFINITE)
    count = torch.count_nonzero(x - x, dim)  # x - x is NaN exactly where x is not finite
    # inside a torch.compile graph: no host read (bool(count) would break the graph)
    if x.device.type != "cpu" or dim is not None or torch.compiler.is_compiling() or not bool(count):
        raw = _scaled(x, plain, dim)
    else:
        raw = torch.stack(_reduce(x, plain)).to(torch.float64) if plain else x.new_zeros(0, dtype=torch.float64)
    return torch.cat([raw, count.to(raw.dtype)[..., None]], dim=-1) if NONFINITE in moments else raw


_ZERO: dict[tuple[torch.dtype, torch.device, int | None], torch.Tensor] = {}  # non-finite counts of finite rows


def _zero(x: torch.Tensor, members: int | None) -> torch.Tensor:
    key = (x.dtype, x.device, members)
    if key not in _ZERO:
        _ZERO[key] = x.new_zeros(() if members is None else (members,))
    return _ZERO[key]


def group_moments(xs: list[torch.Tensor], moments: tuple[str, ...], members: int | None = None) -> torch.Tensor:
    """Raw reductions of every tensor in ``xs`` in one stacked block, shape ``(len(xs), len(moments))``.

    On CPU each tensor costs only its reductions; the rows are stacked once and checked for
    non-finite values with one host read, and only rows that came out non-finite are redone by
    :func:`_exact` (float64 there). Elsewhere every row is :func:`_exact`'s, which never reads the host.

    With ``members=M`` each tensor holds M same-shaped members along its leading dimension (the
    ensemble's models) and is reduced per member: the block is ``(M * len(xs), len(moments))``,
    member-major (row ``m * len(xs) + t`` is member ``m`` of tensor ``t``), so that member m's rows are
    contiguous. A member's row is exactly the row ``group_moments([x[m]], moments)`` would give it.
    """
    xs = [_prepared(x, members) for x in xs]
    dim = None if members is None else 1
    if not xs or not moments:
        return torch.zeros(len(xs) * (members or 1), 0)
    if any(x.device.type != "cpu" for x in xs) or torch.compiler.is_compiling():  # no host read
        exact = stack_rows([_exact(x, moments, dim) for x in xs])  # (N, k) or (N, M, k)
        return exact if members is None else exact.transpose(0, 1).reshape(-1, len(moments))
    plain = tuple(m for m in moments if m != NONFINITE)
    rows = [_reduce(x, plain, dim) for x in xs]
    if NONFINITE in moments:  # 0 where finite: known without a reduction once the block is checked
        rows = [r + [_zero(x, members)] for r, x in zip(rows, xs)]
    if len({x.dtype for x in xs}) > 1:
        rows = [[v.double() for v in r] for r in rows]
    # (N * k,) -> (N, k); with members (M, N * k) -> (M * N, k), member-major
    raw = torch.stack([v for r in rows for v in r], dim=0 if members is None else 1).view(-1, len(moments))
    if math.isfinite(raw.sum().item()):
        return raw
    finite = torch.isfinite(raw).all(1).tolist()
    n = len(xs)

    def alone(i: int) -> torch.Tensor:  # a non-finite row is redone as the one tensor or member slice it is
        return xs[i] if members is None else xs[i % n][i // n]

    return stack_rows([raw[i] if ok else _exact(alone(i), moments) for i, ok in enumerate(finite)])


def stack_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack 1-d raw rows, promoting to float64 where some are (rows re-reduced to avoid overflow)."""
    if len({r.dtype for r in rows}) > 1:
        rows = [r.double() for r in rows]
    return torch.stack(rows)


def tensor_moments(x: torch.Tensor, moments: tuple[str, ...]) -> torch.Tensor:
    """Stack the requested raw reductions of ``x``; shape ``(len(moments),)``, on ``x``'s device.

    float32 for a float32 tensor on CPU unless a reduction overflowed, float64 otherwise (see the module doc).
    """
    return group_moments([x], moments)[0]


def merge_moments(rows: torch.Tensor, numel: list[float], moments: tuple[str, ...]) -> torch.Tensor:
    """Raw reductions of the concatenation of several tensors from theirs: ``rows`` (C, k) -> (k,).

    Sums and counts add (also any columns after ``moments``), ``max |x|`` takes the max, plain norms
    add in squares, and the centred norm combines the per-tensor sums of squared deviations with the spread
    of their means (Chan et al.'s pairwise formula, for C parts at once). Computed in float64 (float32 on MPS).
    """
    acc = torch.float32 if rows.device.type == "mps" else torch.float64
    rows = rows.to(acc)
    merged = rows.sum(0)  # (k,): right for sums and counts
    if MAX_ABS in moments:
        merged[moments.index(MAX_ABS)] = rows[:, moments.index(MAX_ABS)].amax()
    if ROOT_SSD in moments:
        n = torch.tensor(numel, dtype=acc, device=rows.device)  # (C,)
        sums = rows[:, moments.index(SUM)]
        between = (n * (sums / n - sums.sum() / n.sum()) ** 2).sum()
        merged[moments.index(ROOT_SSD)] = (rows[:, moments.index(ROOT_SSD)].square().sum() + between).sqrt()
    if ROOT_SS in moments:
        merged[moments.index(ROOT_SS)] = rows[:, moments.index(ROOT_SS)].square().sum().sqrt()
    return merged


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
            elif stat == R.STD:  # unbiased (n - 1)
                out[:, j] = col[ROOT_SSD] / np.sqrt(np.maximum(n - 1, 1))
            elif stat == R.NORM:
                out[:, j] = col[ROOT_SS] if ROOT_SS in col else np.hypot(col[ROOT_SSD], col[SUM] / np.sqrt(n))
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

    def raw_block(self, tensors: list[torch.Tensor], members: int | None = None) -> torch.Tensor:
        """Raw rows of several tensors at once, ``(len(tensors), k)``; per member ``(M * len(tensors), k)``.

        See :func:`group_moments` (``members``: the leading member dimension M, and the row order).
        """
        return group_moments(tensors, self.moments, members)

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        return (float(inputs.value.numel()), float(sum(inputs.value.shape)))

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        return finalize_moments(raw, self.moments, meta[:, 0], meta[:, 1], stats)


__all__ = ["LINEAR", "TensorStats", "finalize_moments", "group_moments", "merge_moments", "moments_for",
           "stack_rows", "tensor_moments", "tensor_stats"]

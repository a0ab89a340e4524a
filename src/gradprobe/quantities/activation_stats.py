"""Statistics of module outputs: mean, std, non-finite count, dead units, saturation and negative inputs.

Which output statistics apply depends on the module's activation family (``gradprobe.activations``),
looked up in a table keyed by module class (walking the MRO, so subclasses inherit their parent's family) rather than by
``isinstance`` chains. A unit is dead when the activation's local derivative is ~0 for every example:
exactly 0 in ReLU-like flat regions, below :data:`DEAD_TOLERANCE` in the tails of smooth activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.activations import DeadRegion, Family, families
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.tensor_stats import finalize_moments, group_moments, moments_for, tensor_moments

DEAD_TOLERANCE = 1e-3  # |f'(x)| below this passes no useful gradient (the slopes of these activations peak near 1)


# gradprobe's own activations bring their family from the registry; torch modules without a gradprobe
# spec are listed here so the probe classifies them in any user model.
FAMILIES: dict[type, Family] = {
    **families(),
    nn.ReLU6: Family(dead=DeadRegion(below=0.0, above=6.0, on_output=True), bounds=(0.0, 6.0)),
    nn.RReLU: Family(leaky=True),
    nn.PReLU: Family(leaky=True),
    nn.CELU: Family(smooth_from=0.0),
    nn.Mish: Family(smooth_from=-2.5),  # minimum near -2.2
    nn.Hardswish: Family(dead=DeadRegion(below=-3.0)),  # torch 2.13's backward is 0 at x = -3 itself
    nn.Softsign: Family(bounds=(-1.0, 1.0)),
    # The module's own min_val/max_val win, see family_of.
    nn.Hardtanh: Family(dead=DeadRegion(below=-1.0, above=1.0, on_output=True), bounds=(-1.0, 1.0)),
}


def _slope(module: nn.Module, x: float) -> float:
    """|f'(x)| of an elementwise module by autograd in float64 (``forward``, so no hooks fire)."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(module.forward(t), t)
    return abs(float(g))


_THRESHOLDS: dict[tuple[type, str, float], float] = {}  # (class, extra_repr, start) -> threshold


def _flat_below(module: nn.Module, start: float) -> float:
    """The x left of ``start`` where |f'| falls to DEAD_TOLERANCE (bisection; cached per class and config)."""
    key = (type(module), module.extra_repr(), start)
    if key not in _THRESHOLDS:
        lo, hi = -200.0, start
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _slope(module, mid) < DEAD_TOLERANCE else (lo, mid)
        _THRESHOLDS[key] = lo
    return _THRESHOLDS[key]


def family_of(module: nn.Module) -> Family | None:
    """The activation family of ``module``'s class (or a base class), resolved for its parameters; None if none."""
    family = next((FAMILIES[c] for c in type(module).__mro__ if c in FAMILIES), None)
    if family is None:
        return None
    if getattr(module, "inplace", False) and (family.smooth_from is not None or (
            family.dead is not None and not family.dead.on_output)):
        family = replace(family, dead=None, smooth_from=None)  # the input the test needs is overwritten
    if family.smooth_from is not None:
        below = _flat_below(module, family.smooth_from)
        family = replace(family, dead=DeadRegion(below=below, strict=True), smooth_from=None)
    lo, hi = getattr(module, "min_val", None), getattr(module, "max_val", None)
    if family.bounds is not None and isinstance(lo, float) and isinstance(hi, float):
        dead = family.dead
        if dead is not None and dead.on_output:
            dead = replace(dead, below=lo, above=hi)
        family = replace(family, dead=dead, bounds=(lo, hi))
    return family


def flat_mask(region: DeadRegion, source: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """Where the derivative is ~0, entry by entry (bool, ``out``'s shape); ``source`` is the input."""
    v = (out if region.on_output or source is None else source).detach()
    sides = []
    if region.below is not None:
        sides.append(v < region.below if region.strict else v <= region.below)
    if region.above is not None:
        sides.append(v > region.above if region.strict else v >= region.above)
    return sides[0] | sides[1] if len(sides) == 2 else sides[0]


def dead_units(region: DeadRegion, source: torch.Tensor | None, out: torch.Tensor,
               members: int | None = None) -> torch.Tensor:
    """Per unit (all dims but the batch dim 0), whether its derivative is ~0 for every example: bool (units,).

    With ``members=M``, ``out`` is ``(M, B, ...)`` (batch dim 1) and the result ``(M, units)``.
    """
    mask = flat_mask(region, source, out)
    if members is None:
        return mask.reshape(out.shape[0] if out.dim() > 1 else 1, -1).all(dim=0)  # (units,)
    return mask.reshape(members, out.shape[1] if out.dim() > 2 else 1, -1).all(dim=1)  # (M, units)


def _count(mask: torch.Tensor, members: int | None) -> torch.Tensor:
    """True entries of ``mask``: 0-d, or ``(M,)`` per member of a leading member dimension."""
    return mask.sum() if members is None else mask.reshape(members, -1).sum(1)


def saturated_count(out: torch.Tensor, bounds: tuple[float, float], tol: float,
                    members: int | None = None) -> torch.Tensor:
    """Number of entries within ``tol`` of the output range from either asymptote (per member with ``members``)."""
    lo, hi = bounds
    margin = tol * (hi - lo)
    x = out.detach()
    return _count((x <= lo + margin) | (x >= hi - margin), members)


def negative_count(source: torch.Tensor, members: int | None = None) -> torch.Tensor:
    """Number of negative entries of a leaky activation's input (per member with ``members``)."""
    return _count(source.detach() < 0, members)


def units_of(out: torch.Tensor) -> int:
    """Units per example of a module output: all dims but the batch dim 0."""
    return out[0].numel() if out.dim() > 1 else out.numel()


class ActivationStats(Quantity):
    """Forward-output statistics of a module; dead/saturated/negative only where its family has them.

    ``raw`` leaves the dead count out: it needs every call of the module in a step (a unit is dead
    only if dead in all of them), so the probe ANDs the per-call :func:`dead_units` masks and inserts
    the count at column :attr:`dead_column`.
    """

    kind = R.ACTIVATION
    available = (R.MEAN, R.STD, R.NORM, R.MEAN_ABS, R.MAX_ABS, R.NONFINITE, R.DEAD_FRAC, R.SATURATED_FRAC,
                 R.NEGATIVE_FRAC)
    extras = (R.DEAD_FRAC, R.SATURATED_FRAC, R.NEGATIVE_FRAC)  # stats past the moments, in column order

    def __init__(self, stats: tuple[str, ...], saturation_tol: float = 0.01) -> None:
        super().__init__(stats)
        self.saturation_tol = saturation_tol
        self._plain = tuple(s for s in self.stats if s not in self.extras)
        self.moments = moments_for(self._plain)
        self.dead_column = len(self.moments)
        self._member_cache: dict[tuple[Family | None, ...], tuple[tuple[str, ...], list[tuple[int, int]]]] = {}

    def stats_for(self, inputs: Inputs) -> tuple[str, ...]:
        family = inputs.family if isinstance(inputs.family, Family) else None
        applies = {R.DEAD_FRAC: family is not None and family.dead is not None,
                   R.SATURATED_FRAC: family is not None and family.bounds is not None,
                   R.NEGATIVE_FRAC: family is not None and family.leaky}
        return self._plain + tuple(s for s in self.extras if s in self.stats and applies[s])

    def dead_mask(self, inputs: Inputs) -> torch.Tensor | None:
        """The per-unit dead mask (units,) of one call, or None where dead_frac does not apply."""
        family = inputs.family
        if R.DEAD_FRAC not in self.stats_for(inputs) or not isinstance(family, Family) or family.dead is None:
            return None
        return dead_units(family.dead, inputs.source, inputs.value)

    def raw(self, inputs: Inputs) -> torch.Tensor:
        """Moments, then the saturated and negative counts where they apply (not the dead count)."""
        stats, out, family = self.stats_for(inputs), inputs.value, inputs.family
        parts = [tensor_moments(out, self.moments)] if self.moments else []
        dtype = parts[0].dtype if parts else torch.float32
        counts = []
        if R.SATURATED_FRAC in stats and isinstance(family, Family) and family.bounds is not None:
            counts.append(saturated_count(out, family.bounds, self.saturation_tol))
        if R.NEGATIVE_FRAC in stats:
            counts.append(negative_count(inputs.source if inputs.source is not None else out))
        if counts:
            parts.append(torch.stack(counts).to(dtype))
        return torch.cat(parts) if parts else torch.zeros(0)

    def member_stats(self, families: Sequence[Family | None]) -> tuple[str, ...]:
        """The stats of one module output across members with these families: the union of their ``stats_for``."""
        return self._members(tuple(families))[0]

    def _members(self, families: tuple[Family | None, ...]) -> tuple[tuple[str, ...], list[tuple[int, int]]]:
        """:meth:`member_stats` and the runs ``(start, stop)`` of equal families along M (cached: per step)."""
        if families not in self._member_cache:
            kept = [self.stats_for(Inputs(torch.zeros(()), family=f)) for f in families]
            runs: list[list[int]] = []
            for i, family in enumerate(families):
                if runs and families[runs[-1][0]] == family:
                    runs[-1][1] = i + 1
                else:
                    runs.append([i, i + 1])
            self._member_cache[families] = (self._plain + tuple(s for s in self.extras if any(s in k for k in kept)),
                                            [(a, b) for a, b in runs])
        return self._member_cache[families]

    def raw_members(self, out: torch.Tensor, source: torch.Tensor, families: Sequence[Family | None]) -> torch.Tensor:
        """Rows ``(M, k)`` of a member block ``out`` (M, B, ...) with input ``source`` and member families.

        Columns are :meth:`raw`'s with the dead count at :attr:`dead_column`, i.e. a committed row of
        the probe, for the stats of :meth:`member_stats`; a member whose family lacks an extra stat
        gets 0 there (the caller drops it). One op per run of equal families along M.
        """
        m = out.shape[0]
        stats, runs = self._members(tuple(families))
        parts = [group_moments([out], self.moments, members=m)] if self.moments else []
        counts = []
        for stat in (s for s in self.extras if s in stats):
            cols = []
            for start, stop in runs:
                fam, o, n = families[start], out[start:stop], stop - start
                if stat == R.DEAD_FRAC and fam is not None and fam.dead is not None:
                    cols.append(dead_units(fam.dead, source[start:stop], o, members=n).sum(1))
                elif stat == R.SATURATED_FRAC and fam is not None and fam.bounds is not None:
                    cols.append(saturated_count(o, fam.bounds, self.saturation_tol, members=n))
                elif stat == R.NEGATIVE_FRAC and fam is not None and fam.leaky:
                    cols.append(negative_count(source[start:stop], members=n))
                else:
                    cols.append(out.new_zeros(n, dtype=torch.long))
            counts.append(cols[0] if len(cols) == 1 else torch.cat(cols))
        dtype = parts[0].dtype if parts else out.dtype
        if counts:
            parts.append(torch.stack(counts, dim=1).to(dtype))
        return torch.cat(parts, dim=1) if parts else out.new_zeros(m, 0)

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        out = inputs.value
        return (float(out.numel()), float(sum(out.shape)), float(units_of(out)))

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        k = len(self.moments)
        plain = finalize_moments(raw[:, :k], self.moments, meta[:, 0], meta[:, 1], self._plain)
        extra = []
        for col, stat in enumerate((s for s in stats if s in self.extras), start=k):
            extra.append(raw[:, col] / (meta[:, 2] if stat == R.DEAD_FRAC else meta[:, 0]))
        return np.column_stack([plain, *extra]) if extra else plain


__all__ = ["DEAD_TOLERANCE", "FAMILIES", "ActivationStats", "DeadRegion", "Family", "dead_units", "family_of",
           "flat_mask", "negative_count", "saturated_count", "units_of"]

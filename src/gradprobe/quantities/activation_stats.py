"""Statistics of module outputs: mean, std, non-finite count, dead units and saturation.

Which output statistics apply depends on the module's activation family,
looked up in a table keyed by module class (walking the MRO, so subclasses
inherit their parent's family) rather than by ``isinstance`` chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.tensor_stats import finalize_moments, moments_for, tensor_moments


@dataclass(frozen=True)
class Family:
    """How an activation can fail: dead (ReLU family) or saturated (bounded, with asymptotes lo, hi)."""

    dead: bool = False
    bounds: tuple[float, float] | None = None


RELU_LIKE = Family(dead=True)
FAMILIES: dict[type, Family] = {
    nn.ReLU: RELU_LIKE,
    nn.ReLU6: Family(dead=True, bounds=(0.0, 6.0)),
    nn.LeakyReLU: RELU_LIKE,
    nn.RReLU: RELU_LIKE,
    nn.PReLU: RELU_LIKE,
    nn.ELU: RELU_LIKE,
    nn.CELU: RELU_LIKE,
    nn.SELU: RELU_LIKE,
    nn.GELU: RELU_LIKE,
    nn.SiLU: RELU_LIKE,
    nn.Mish: RELU_LIKE,
    nn.Hardswish: RELU_LIKE,
    nn.Sigmoid: Family(bounds=(0.0, 1.0)),
    nn.Hardsigmoid: Family(bounds=(0.0, 1.0)),
    nn.Tanh: Family(bounds=(-1.0, 1.0)),
    nn.Softsign: Family(bounds=(-1.0, 1.0)),
    nn.Hardtanh: Family(bounds=(-1.0, 1.0)),  # the module's own min_val/max_val win, see family_of
}


def family_of(module: nn.Module) -> Family | None:
    """The activation family of ``module``'s class (or a base class), or None for non-activations."""
    family = next((FAMILIES[c] for c in type(module).__mro__ if c in FAMILIES), None)
    lo, hi = getattr(module, "min_val", None), getattr(module, "max_val", None)
    if family is not None and family.bounds is not None and isinstance(lo, float) and isinstance(hi, float):
        return Family(dead=family.dead, bounds=(lo, hi))
    return family


def dead_count(out: torch.Tensor) -> torch.Tensor:
    """Number of units (features: all dims but the batch dim 0) that are <= 0 for every example."""
    flat = out.detach().reshape(out.shape[0] if out.dim() > 1 else 1, -1)  # (B, units)
    return (flat.amax(dim=0) <= 0).sum()


def saturated_count(out: torch.Tensor, bounds: tuple[float, float], tol: float) -> torch.Tensor:
    """Number of entries within ``tol`` of the output range from either asymptote."""
    lo, hi = bounds
    margin = tol * (hi - lo)
    x = out.detach()
    return ((x <= lo + margin) | (x >= hi - margin)).sum()


def _units(out: torch.Tensor) -> int:
    return out[0].numel() if out.dim() > 1 else out.numel()


class ActivationStats(Quantity):
    """Forward-output statistics of a module; dead/saturated only where its family has them."""

    kind = R.ACTIVATION
    available = (R.MEAN, R.STD, R.NORM, R.MEAN_ABS, R.MAX_ABS, R.NONFINITE, R.DEAD_FRAC, R.SATURATED_FRAC)

    def __init__(self, stats: tuple[str, ...], saturation_tol: float = 0.01) -> None:
        super().__init__(stats)
        self.saturation_tol = saturation_tol
        self._plain = tuple(s for s in self.stats if s not in (R.DEAD_FRAC, R.SATURATED_FRAC))
        self._moments = moments_for(self._plain)

    def stats_for(self, inputs: Inputs) -> tuple[str, ...]:
        family = inputs.family if isinstance(inputs.family, Family) else None
        extra = []
        if family is not None and family.dead and R.DEAD_FRAC in self.stats:
            extra.append(R.DEAD_FRAC)
        if family is not None and family.bounds is not None and R.SATURATED_FRAC in self.stats:
            extra.append(R.SATURATED_FRAC)
        return self._plain + tuple(extra)

    def raw(self, inputs: Inputs) -> torch.Tensor:
        stats, out = self.stats_for(inputs), inputs.value
        parts = [tensor_moments(out, self._moments)] if self._moments else []
        counts = []
        if R.DEAD_FRAC in stats:
            counts.append(dead_count(out))
        if R.SATURATED_FRAC in stats and isinstance(inputs.family, Family) and inputs.family.bounds is not None:
            counts.append(saturated_count(out, inputs.family.bounds, self.saturation_tol))
        if counts:
            parts.append(torch.stack(counts).to(parts[0].dtype if parts else torch.float32))
        return torch.cat(parts)

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        out = inputs.value
        return (float(out.numel()), float(sum(out.shape)), float(_units(out)))

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        k = len(self._moments)
        plain = finalize_moments(raw[:, :k], self._moments, meta[:, 0], meta[:, 1], self._plain)
        extra = []
        col = k
        if R.DEAD_FRAC in stats:
            extra.append(raw[:, col] / meta[:, 2])
            col += 1
        if R.SATURATED_FRAC in stats:
            extra.append(raw[:, col] / meta[:, 0])
        return np.column_stack([plain, *extra]) if extra else plain


__all__ = ["FAMILIES", "ActivationStats", "Family", "dead_count", "family_of", "saturated_count"]

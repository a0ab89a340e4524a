"""Per-unit death and saturation with a time: when each unit of a recorded activation module last fired.

A unit is one index of a module output's unit dimension (``ProbeOptions.unit_dim``: the features of
``(B, F)``, the channels of ``(B, C, H, W)``). On each recorded step (the probe's cadence, nothing in
between), a ReLU-family unit *fired* if its derivative was non-zero for at least one example of at
least one call of the step (the complement of the probe's dead mask, pooled the same way: dead only if
dead in every call); a saturating unit (sigmoid/tanh family) was *saturated* if every entry of every
call was within ``saturation_tol`` of the output range from an asymptote. Kept on the device per
module: the step each unit last fired, the first step it was seen dead and its count of saturated
steps, a few in-place ops on ``(units,)`` tensors per recorded step; the host reads them once, in
:meth:`UnitTracker.frame`. ``dead_since`` is derived there from ``last_fired`` and the recorded steps.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from gradprobe.errors import GradprobeError
from gradprobe.quantities.activation_stats import Family, flat_mask
from gradprobe.store.layout import UNIT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["UnitMasks", "UnitTracker", "pool_masks", "unit_masks"]


@dataclass(frozen=True)
class UnitMasks:
    """Per-unit masks of one call (or of a step's calls pooled): bool ``(units,)`` or None where not applicable."""

    dead: torch.Tensor | None  # derivative ~0 for every example (the family has a dead region)
    saturated: torch.Tensor | None  # within tol of an asymptote for every example (the family has bounds)


def _per_unit(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``mask`` (B, ...) reduced with ``all`` over every dim but ``dim``: bool (units,)."""
    moved = mask.movedim(dim, 0)
    return moved.reshape(moved.shape[0], -1).all(1)


def unit_masks(family: object, source: torch.Tensor | None, out: torch.Tensor, tol: float, dim: int,
               dead_mask: torch.Tensor | None = None) -> UnitMasks | None:
    """The dead and saturated masks of one call's output ``out`` (input ``source``) along unit dim ``dim``.

    ``dead_mask``: the probe's dead mask of the call (over all non-batch dims), reused for a ``(B, F)`` output.
    None if the family has neither a dead region nor asymptotes, or ``out`` has no dim ``dim`` past the batch.
    """
    if not isinstance(family, Family) or (family.dead is None and family.bounds is None):
        return None
    if not -out.dim() <= dim < out.dim() or dim % out.dim() == 0:
        return None
    dead = None
    if family.dead is not None:
        dead = dead_mask if dead_mask is not None and out.dim() == 2 else _per_unit(flat_mask(family.dead, source, out),
                                                                                     dim)
    saturated = None
    if family.bounds is not None:
        lo, hi = family.bounds
        margin, x = tol * (hi - lo), out.detach()
        saturated = _per_unit((x <= lo + margin) | (x >= hi - margin), dim)  # as quantities.saturated_count
    return UnitMasks(dead, saturated)


def pool_masks(masks: list[UnitMasks | None]) -> UnitMasks | None:
    """The masks of a step's calls of one module, AND-ed (dead/saturated only if so in every call).

    None if a call has none or the calls' unit counts differ (their units cannot be matched).
    """
    if not masks or any(m is None for m in masks):
        return None
    if len(masks) == 1:
        return masks[0]
    known = [m for m in masks if m is not None]

    def both(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        if any(p is None for p in parts) or len({p.shape for p in parts if p is not None}) != 1:
            return None
        return torch.stack(parts).all(0)  # type: ignore[arg-type]

    pooled = UnitMasks(both([m.dead for m in known]), both([m.saturated for m in known]))
    return None if pooled.dead is None and pooled.saturated is None else pooled


@dataclass
class _Layer:
    """Device state of one module's units and its recorded steps (host ints: no sync)."""

    units: int
    last_fired: torch.Tensor | None  # (units,) int64, -1: never fired
    first_dead: torch.Tensor | None  # (units,) int64, -1: never seen dead
    saturated: torch.Tensor | None  # (units,) int64: recorded steps saturated
    observed: int = 0  # recorded steps this module was observed on
    # Those steps, ascending; after a restore only the ones dead_since can be (see UnitTracker.restore).
    steps: array = field(default_factory=lambda: array("q"))

    def to(self, device: torch.device) -> None:
        """Move the state to ``device`` (a restored layer's first update)."""
        for key in ("last_fired", "first_dead", "saturated"):
            t = getattr(self, key)
            if t is not None:
                setattr(self, key, t.to(device))


class UnitTracker:
    """Per-unit last-fired step, first-dead step and saturated-step count of each recorded module.

    Args:
        dim: the unit dimension of module outputs (not 0, the batch).

    Raises:
        GradprobeError: if ``dim`` is 0.
    """

    def __init__(self, dim: int = 1) -> None:
        if not isinstance(dim, int) or dim == 0:
            raise GradprobeError(f"unit_dim: {dim!r} is not allowed; use a non-batch dim, e.g. 1 (features, "
                                 "channels) or -1 (the last dim of (B, T, D))")
        self.dim = dim
        self._layers: dict[str, _Layer] = {}

    def update(self, step: int, name: str, masks: UnitMasks) -> None:
        """Fold recorded step ``step``'s pooled masks of module ``name`` into its state (on the device)."""
        mask = masks.dead if masks.dead is not None else masks.saturated
        assert mask is not None  # pool_masks and unit_masks never return empty masks
        layer = self._layers.get(name)
        if layer is None:
            def filled(m: torch.Tensor | None, value: int) -> torch.Tensor | None:
                return None if m is None else torch.full(m.shape, value, dtype=torch.int64, device=m.device)

            layer = self._layers[name] = _Layer(mask.numel(), filled(masks.dead, -1), filled(masks.dead, -1),
                                                filled(masks.saturated, 0))
        state = layer.last_fired if layer.last_fired is not None else layer.saturated
        if state is not None and state.device != mask.device:
            layer.to(mask.device)
        if mask.numel() != layer.units:
            log.warning("units of %s: %d units at step %d, %d before; step not tracked", name, mask.numel(), step,
                        layer.units)
            return
        if masks.dead is not None and layer.last_fired is not None and layer.first_dead is not None:
            layer.last_fired.masked_fill_(~masks.dead, step)
            layer.first_dead.masked_fill_(masks.dead & layer.first_dead.lt(0), step)
        if masks.saturated is not None and layer.saturated is not None:
            layer.saturated.add_(masks.saturated)
        layer.steps.append(step)
        layer.observed += 1

    def restore(self, units: pd.DataFrame) -> None:
        """Continue from a snapshot of :meth:`frame` (a resumed run): later steps fold into it as if never stopped.

        Of the earlier recorded steps only those ``dead_since`` can take are kept: every unit's
        ``last_fired`` and ``dead_since`` and the last one. The first recorded step after a unit's
        ``last_fired`` is among them (any recorded step in between would be a later ``last_fired``).
        """
        for name, rows in units.groupby("layer", sort=False):
            rows = rows.sort_values("unit")

            def column(col: str) -> torch.Tensor | None:
                values = rows[col]
                return None if values.isna().all() else torch.tensor(values.to_numpy("int64"), dtype=torch.int64)

            observed = int(rows["observed_steps"].max())
            frac = rows["saturated_frac"].to_numpy("float64")
            saturated = None if np.isnan(frac).all() else torch.tensor(np.rint(frac * observed), dtype=torch.int64)
            kept = np.concatenate([rows[c].dropna().to_numpy("int64") for c in ("last_fired", "dead_since")]
                                  + [[int(rows["last_observed"].max())]])
            self._layers[str(name)] = _Layer(len(rows), column("last_fired"), column("first_dead"), saturated,
                                             observed, array("q", np.unique(kept[kept >= 0]).tolist()))

    def frame(self) -> pd.DataFrame:
        """One row per unit of every tracked module, columns ``UNIT_COLUMNS`` (one host transfer).

        ``dead_since`` is the first recorded step after ``last_fired`` (the first one if it never fired)
        for a unit dead at its module's last recorded step, -1 for one alive then; death columns are
        <NA> for a family without a dead region, ``saturated_frac`` NaN for one without asymptotes.
        """
        import pandas as pd

        state = [t for layer in self._layers.values() for t in (layer.last_fired, layer.first_dead, layer.saturated)
                 if t is not None]
        host = iter(torch.cat([t.cpu() for t in state]).split([t.numel() for t in state]) if state else [])
        frames = []
        for name, layer in self._layers.items():
            steps = np.frombuffer(layer.steps, dtype=np.int64)
            n, observed = layer.units, layer.observed
            last = first = None
            if layer.last_fired is not None:
                last, first = next(host).numpy(), next(host).numpy()
            sat = next(host).numpy() / max(observed, 1) if layer.saturated is not None else np.full(n, np.nan)
            dead_since = None
            if last is not None and observed:
                after = np.searchsorted(steps, last, side="right")  # index of the first recorded step after it
                dead_since = np.where(last == steps[-1], -1, steps[np.minimum(after, len(steps) - 1)])
            frames.append(pd.DataFrame({
                "layer": name, "unit": np.arange(n),
                "last_fired": pd.array(last if last is not None else [None] * n, dtype="Int64"),
                "dead_since": pd.array(dead_since if dead_since is not None else [None] * n, dtype="Int64"),
                "first_dead": pd.array(first if first is not None else [None] * n, dtype="Int64"),
                "saturated_frac": sat, "observed_steps": observed,
                "last_observed": int(steps[-1]) if observed else -1}))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype="float64" if c == "saturated_frac" else "string" if c == "layer"
                                              else "Int64") for c in UNIT_COLUMNS})
        out = pd.concat(frames, ignore_index=True)
        return out.astype({c: "Int64" for c in ("unit", "observed_steps", "last_observed")})

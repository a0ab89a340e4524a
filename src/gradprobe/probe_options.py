"""What a probe records beyond its cadence, and the selection of parameters and modules by name."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from gradprobe import records as R
from gradprobe.errors import GradprobeError


@dataclass(frozen=True)
class ProbeOptions:
    """What the probe records beyond its cadence; the defaults are cheap enough to leave on."""

    grad_stats: tuple[str, ...] = R.DEFAULT_GRAD_STATS
    weight_stats: tuple[str, ...] = R.DEFAULT_WEIGHT_STATS  # update_ratio needs a weight snapshot per step
    activation_stats: tuple[str, ...] = R.DEFAULT_ACTIVATION_STATS + (R.NONFINITE,)
    delta_stats: tuple[str, ...] = R.DEFAULT_DELTA_STATS + (R.NONFINITE,)
    bins: int = 30  # histogram bins; edges span each tensor's finite range
    saturation_tol: float = 0.01  # "saturated" = within this fraction of the range from an asymptote
    flush_every: int = 64  # recorded steps buffered on the device before one transfer to the host
    structure: bool = True  # read residual joins, norms and tied weights from the first training pass (once)
    sharpness_iters: int = 20  # at most this many Hessian-vector products per top-eigenvalue estimate
    sharpness_tol: float = 1e-3  # relative change of the estimate that stops the power iteration
    snr_examples: int = 32  # the gradient SNR uses the first this many examples of the batch
    units: bool = True  # per-unit last-fired step and saturated fraction on recorded steps (gradprobe.units)
    unit_dim: int = 1  # the unit dim of module outputs: features of (B, F), channels of (B, C, H, W); -1 for (B, T, D)


def split_name(name: str) -> tuple[str, str]:
    """``"layers.3.weight"`` -> ``("layers.3", "weight")``."""
    layer, _, tensor = name.rpartition(".")
    return layer, tensor


def select(names: Sequence[str], patterns: str | Sequence[str] | None, what: str) -> list[str]:
    """The ``names`` matching any fnmatch pattern (all of them for None); raises if none match."""
    if patterns is None:
        return list(names)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not chosen:
        sample = ", ".join(list(names)[:6]) or "(none)"
        raise GradprobeError(f"{what}: {pats!r} matches nothing; available names include {sample}")
    return chosen


__all__ = ["ProbeOptions", "select", "split_name"]

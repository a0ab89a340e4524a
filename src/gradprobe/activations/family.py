"""How an activation can fail, as the probe's dead/saturated/negative statistics see it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadRegion", "Family"]


@dataclass(frozen=True)
class DeadRegion:
    """Where the derivative is ~0: ``v <= below`` or ``v >= above`` (``<``/``>`` if strict), v the input or output."""

    below: float | None = None
    above: float | None = None
    strict: bool = False  # smooth tails: |f'| reaches the tolerance at the solved threshold itself
    on_output: bool = False  # test the output: the same set for ReLU/ReLU6/Hardtanh, and it survives in-place


@dataclass(frozen=True)
class Family:
    """How an activation can fail: dead units (a flat region), saturation (asymptotes lo, hi), or neither.

    ``smooth_from`` marks a smooth activation whose tail is flat to ``DEAD_TOLERANCE`` (quantities) left
    of the threshold ``family_of`` solves for, searching left from this point (|f'| grows towards it).
    ``leaky`` units pass a gradient for negative inputs and are never dead; they record ``negative_frac``.
    """

    dead: DeadRegion | None = None
    bounds: tuple[float, float] | None = None
    smooth_from: float | None = None
    leaky: bool = False

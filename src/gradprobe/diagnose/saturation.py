"""Saturated units: most outputs of a bounded activation (sigmoid, tanh) sit at an asymptote, where its slope is ~0."""

from __future__ import annotations

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import SATURATED, LayerVerdict

_REMEDIES = [E.SMALLER_INIT, E.NORM, E.RELU, E.LOWER_LR]


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each weight layer whose following bounded activation has at least ``saturated_fraction`` saturated.

    Requires: activation ``saturated_frac`` (and ``std`` of the weight layer's output for the wording).
    """
    found = []
    for weight in frames.weight_layers:
        act = frames.activation_after(weight)
        sat = E.window_median(frames.output(R.ACTIVATION, R.SATURATED_FRAC, act), thresholds)
        if sat is None or sat[0] < thresholds.saturated_fraction:
            continue
        text = (f"{E.pct(sat[0])} of {act}'s outputs are saturated (pinned at an asymptote, where the slope "
                f"and so the gradient is near 0; median over the last {sat[1]} recorded steps)")
        numbers = {"saturated_frac": sat[0], "steps": sat[1], "activation": act}
        spread = E.window_median(frames.output(R.ACTIVATION, R.STD, E.module_of(weight)), thresholds)
        if spread is not None:
            text += f"; {E.module_of(weight)}'s outputs (the pre-activations) have std {spread[0]:.2g}"
            numbers["preactivation_std"] = spread[0]
        found.append(LayerVerdict(weight, SATURATED, text, list(_REMEDIES), numbers))
    return found


__all__ = ["check"]

"""Exploding gradients: a layer's back-propagated error is many times what the output layer sends back."""

from __future__ import annotations

from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import EXPLODING, LayerVerdict

_REMEDIES = [E.SMALLER_INIT, E.CLIP, E.NORM, E.LOWER_LR, E.DEPTH]


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each hidden weight layer whose error ratio (grad ratio without delta records) is above the limit.

    Requires: delta ``mean_abs`` of module outputs; grad ``mean_abs`` of the weights if no delta was recorded.
    """
    found = []
    for weight in frames.weight_layers[:-1]:
        err, grad = E.flow(frames, weight, thresholds)
        measure = E.flow_measure(frames, err, grad)
        if measure is not None and measure.ratio > thresholds.exploding_ratio:
            text, numbers = E.describe_flow(weight, err, grad)
            found.append(LayerVerdict(weight, EXPLODING, text, list(_REMEDIES), numbers))
    return found


__all__ = ["check"]

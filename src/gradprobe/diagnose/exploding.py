"""Exploding gradients: a layer's back-propagated error is many times what the output layer sends back."""

from __future__ import annotations

from gradprobe.diagnose import evidence as E
from gradprobe.diagnose import residual
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import EXPLODING, LayerVerdict

_REMEDIES = [E.SMALLER_INIT, E.CLIP, E.NORM, E.LOWER_LR, E.DEPTH]


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each hidden weight layer whose flow ratio is above the limit (``residual.measures`` says which ratios).

    Requires: delta ``mean_abs`` of module outputs; grad ``mean_abs`` of the weights.
    """
    found = []
    for weight in frames.weight_layers[:-1]:
        hit = residual.flagged(frames, weight, thresholds, EXPLODING)
        if hit is not None:
            found.append(LayerVerdict(weight, EXPLODING, hit[0], list(_REMEDIES), hit[1]))
    return found


__all__ = ["check"]

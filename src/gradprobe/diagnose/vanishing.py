"""Vanishing gradients: a layer's back-propagated error is a small fraction of what the output layer sends back."""

from __future__ import annotations

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose import residual
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import VANISHING, LayerVerdict


def _remedies(frames: E.Frames, weight: str) -> list[str]:
    """Rank the remedies by the activation that follows the layer: bounded ones are the usual cause."""
    act = frames.activation_after(weight)
    if frames.output(R.ACTIVATION, R.SATURATED_FRAC, act) is not None:
        return [E.RELU, E.INIT, E.NORM, E.RESIDUAL, E.DEPTH]
    if frames.output(R.ACTIVATION, R.DEAD_FRAC, act) is not None:
        return [E.INIT, E.NORM, E.RESIDUAL, E.DEPTH]
    return [E.INIT, E.NORM, E.RESIDUAL, E.RELU, E.DEPTH]


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each hidden weight layer whose flow ratio is below the limit (``residual.measures`` says which ratios).

    Requires: delta ``mean_abs`` of module outputs; grad ``mean_abs`` of the weights.
    """
    found = []
    for weight in frames.weight_layers[:-1]:
        hit = residual.flagged(frames, weight, thresholds, VANISHING)
        if hit is not None:
            found.append(LayerVerdict(weight, VANISHING, hit[0], _remedies(frames, weight), hit[1]))
    return found


__all__ = ["check"]

"""Vanishing gradients: a layer's back-propagated error is a small fraction of what the output layer sends back."""

from __future__ import annotations

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
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
    """Flag each hidden weight layer whose error ratio (grad ratio without delta records) is below the limit.

    Requires: delta ``mean_abs`` of module outputs; grad ``mean_abs`` of the weights if no delta was recorded.
    """
    found = []
    for weight in frames.weight_layers[:-1]:
        err, grad = E.flow(frames, weight, thresholds)
        measure = E.flow_measure(frames, err, grad)
        if measure is not None and measure.ratio < thresholds.vanishing_ratio:
            text, numbers = E.describe_flow(weight, err, grad)
            found.append(LayerVerdict(weight, VANISHING, text, _remedies(frames, weight), numbers))
    return found


__all__ = ["check"]

"""Every threshold the diagnosis uses, each with the reason for its default; all are configurable.

The gradient-flow rules compare the back-propagated error ``dL/dz`` of a weight layer's output
with the error that the output layer sends back into the hidden stack (``dL/da`` of the output
layer's input). In a plain stack every hidden activation and weight matrix sits between the two.
Mean-field theory (Schoenholz et al. 2017) gives the gain per layer of the *squared* error,
``chi = sigma_w^2 E[phi'(h)^2]`` at the fixed point ``q*`` of the variance map; the mean |delta|
therefore changes by ``sqrt(chi)`` per layer, and the ratio over L layers scales as ``chi^(L/2)``.
Sigmoid layers with N(0, 1) weights of fan-in 5 (``sigma_w^2 = 5``) have ``q* = 1.541`` and
``chi = 0.200`` (``theory.meanfield``; a direct NumPy integral agrees to 1e-10): |delta| shrinks
to 0.45 per layer and to ``0.200^2 = 1/25`` over 4 layers at initialisation. He-initialised ReLU
layers have ``chi = 1``. Measured on the ``circles-deep`` preset (median over the run): sigmoid
1/16, tanh 5.8x, ReLU 6.8x. Residual streams, normalisation layers and tied weights break the
product; with a model structure ``diagnose.residual`` compares what is comparable instead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gradprobe.errors import GradprobeError


@dataclass(frozen=True)
class Thresholds:
    """Limits of the diagnosis rules; see the comment beside each default for why it is what it is."""

    # Vanishing: a layer's error (or, without delta records, its mean |grad|) is below this
    # fraction of the output layer's. 1/10 over 4 layers is a |delta| gain of 0.56 per layer
    # (chi = 0.32), above the deep sigmoid net's 1/25 at init (chi = 0.200) and its 1/16 over the
    # run; healthy ReLU/tanh nets stay within a factor of ~7 either way.
    vanishing_ratio: float = 0.1
    # Exploding: the same ratio above this. 10x is the mirror image of vanishing; He-initialised
    # ReLU nets stay near 1, and a train-time drift of the gain to ~7x (circles-deep) is not flagged.
    exploding_ratio: float = 10.0
    # Along a residual stream (with a model structure), a ratio beyond the limits above counts only if
    # the error also grows (shrinks) by more than this factor per residual join on average. A join
    # adds the branch's error to the skip's: with a branch r times the skip, the gain is about
    # sqrt(1 + r^2), so 3 means branches ~3x stronger than their skips. Healthy nets measured per
    # join: pre-norm GPT ~1.0, LayerNorm residual MLP 1.2-1.3, BatchNorm ResNet 1.4-1.8 (its
    # stream grows); unnormalised residual MLP with N(0, 1) weights ~20.
    stream_gain: float = 3.0
    # Dead: at least this fraction of the units after a weight layer have a ~0 derivative (ReLU: input
    # <= 0) for every example of a batch. Half the units gone halves the layer's width and its
    # gradient; a few dead units are normal in ReLU nets (He-initialised nets show 0-20%).
    dead_fraction: float = 0.5
    # Saturated: at least this fraction of a bounded activation's outputs lie within 1% of the range
    # from an asymptote, where sigma' or tanh' is below 0.04: most of the layer passes no gradient.
    saturated_fraction: float = 0.5
    # Stalled: a weight matrix's median update ratio ||dW||/||W|| is below this fraction of the
    # median of the other weight matrices'. Adaptive optimizers keep layers within ~10x of each
    # other; a factor of 100 means the layer is in effect frozen (lr, requires_grad, or no gradient).
    stalled_ratio: float = 0.01
    # Window of the state rules (dead, saturated, stalled): the last 20% of recorded steps, so the
    # verdict describes the network as it is now, and never fewer than min_window steps (when that
    # many were recorded) so a single noisy batch cannot decide it.
    window_fraction: float = 0.2
    min_window: int = 5
    # Window of the gradient-flow rules (vanishing, exploding): the whole run by default. Training
    # lets a net partly escape vanishing: circles-deep's sigmoid arm has 1/46 in its first 20% of
    # steps, 1/16 over the run and 1/5.5 in its last 20%; the run median says what shaped training.
    flow_window_fraction: float = 1.0

    def __post_init__(self) -> None:
        """Check every limit.

        Raises:
            GradprobeError: naming the first field out of range, its value and what is allowed.
        """
        _check("vanishing_ratio", self.vanishing_ratio, 0.0, 1.0, "a ratio in (0, 1), e.g. 0.1")
        _check("exploding_ratio", self.exploding_ratio, 1.0, math.inf, "a ratio > 1, e.g. 10")
        _check("stream_gain", self.stream_gain, 1.0, math.inf, "a gain per join > 1, e.g. 3")
        _check("dead_fraction", self.dead_fraction, 0.0, 1.0, "a fraction in (0, 1], e.g. 0.5", closed=True)
        _check("saturated_fraction", self.saturated_fraction, 0.0, 1.0, "a fraction in (0, 1], e.g. 0.5",
               closed=True)
        _check("stalled_ratio", self.stalled_ratio, 0.0, 1.0, "a ratio in (0, 1), e.g. 0.01")
        _check("window_fraction", self.window_fraction, 0.0, 1.0, "a fraction in (0, 1], e.g. 0.2", closed=True)
        _check("flow_window_fraction", self.flow_window_fraction, 0.0, 1.0, "a fraction in (0, 1], e.g. 1",
               closed=True)
        if isinstance(self.min_window, bool) or not isinstance(self.min_window, int) or self.min_window < 1:
            raise GradprobeError(f"thresholds.min_window: {self.min_window!r} is not allowed; use an integer >= 1")

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with the given fields changed; None values are ignored (unset CLI options).

        Raises:
            GradprobeError: for an unknown field or a value out of range.
        """
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise GradprobeError(f"thresholds: {key!r} is not a threshold; use one of {', '.join(sorted(names))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _check(name: str, value: float, lo: float, hi: float, allowed: str, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = lo < value < hi or (closed and value == hi)
    if not ok:
        raise GradprobeError(f"thresholds.{name}: {value!r} is not allowed; use {allowed}")


def tail_len(n: int, fraction: float, minimum: int) -> int:
    """How many of the last of ``n`` steps a window covers: ``max(minimum, ceil(fraction * n))``, at most ``n``."""
    return min(n, max(minimum, math.ceil(fraction * n)))


__all__ = ["Thresholds", "tail_len"]

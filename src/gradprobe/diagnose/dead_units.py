"""Dead units: most units after a weight layer sit where the activation's derivative is ~0 for every example."""

from __future__ import annotations

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import DEAD, LayerVerdict

# Only activations with a dead region record dead_frac, and leaky units have none: never advise the one in use.
LEAKY = "use LeakyReLU or PReLU, whose slope for negative inputs is never 0 (no unit can die)"


def _pushed_negative(frames: E.Frames, weight: str, thresholds: Thresholds) -> str | None:
    """Words on pre-activations that sit far below 0 (mean < -2 std), or None if they do not."""
    module = E.module_of(weight)
    mean = E.window_median(frames.output(R.ACTIVATION, R.MEAN, module), thresholds)
    std = E.window_median(frames.output(R.ACTIVATION, R.STD, module), thresholds)
    if mean is None or std is None or not mean[0] < -2 * std[0]:
        return None
    words = f"{module}'s outputs (the pre-activations) average {mean[0]:.3g} with std {std[0]:.2g}"
    bias = E.window_median(frames.get(R.WEIGHT, R.MEAN, module, "bias"), thresholds)
    if bias is not None:
        words += f", its bias averages {bias[0]:.3g}"
    return words


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each weight layer whose following activation has at least ``dead_fraction`` dead units.

    Requires: activation ``dead_frac`` (and ``mean``/``std`` of the weight layer's output for the wording).
    """
    found = []
    for weight in frames.weight_layers:
        act = frames.activation_after(weight)
        dead = E.window_median(frames.output(R.ACTIVATION, R.DEAD_FRAC, act), thresholds)
        if dead is None or dead[0] < thresholds.dead_fraction:
            continue
        text = (f"{E.pct(dead[0])} of {act}'s units are dead (the activation's derivative is ~0 for every "
                f"example of a step's batch; "
                f"median over the last {dead[1]} recorded steps)")
        pushed = _pushed_negative(frames, weight, thresholds)
        if pushed is not None:
            text += f"; {pushed}"
            remedies = [E.BIAS, E.LOWER_LR, LEAKY, E.INIT, E.NORM]
        else:
            remedies = [E.LOWER_LR, LEAKY, E.INIT, E.NORM, E.BIAS]
        found.append(LayerVerdict(weight, DEAD, text, remedies, {"dead_frac": dead[0], "steps": dead[1],
                                                                  "activation": act}))
    return found


__all__ = ["check"]

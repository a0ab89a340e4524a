"""Stalled layer: a weight matrix whose updates are a tiny fraction of the other layers' (relative to its size)."""

from __future__ import annotations

import numpy as np

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import STALLED, LayerVerdict


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """Flag each weight matrix whose median update ratio is below ``stalled_ratio`` x its peers' median.

    Requires: weight ``update_ratio`` (and grad ``mean_abs`` to tell a frozen step size from a missing gradient).
    """
    medians = {}
    for weight in frames.weight_layers:
        m = E.window_median(frames.param(R.WEIGHT, R.UPDATE_RATIO, weight), thresholds)
        if m is not None:
            medians[weight] = m
    found = []
    for weight, (own, steps) in medians.items():
        peers = float(np.median([v for k, (v, _) in medians.items() if k != weight])) if len(medians) > 1 else 0.0
        if not peers > 0 or own >= thresholds.stalled_ratio * peers:
            continue
        text = (f"{weight} barely moves: its update ratio ||dW||/||W|| is {E.times(own / peers)} the other "
                f"weight layers' (median {E.sci(own)} vs {E.sci(peers)} over the last {steps} recorded steps)")
        _, grad = E.flow(frames, weight, thresholds)
        if grad is not None and grad.ratio >= thresholds.vanishing_ratio:
            text += (f", though it receives {E.times(grad.ratio)} the output layer's gradient: "
                     "its step size is the cause")
            remedies = [E.FROZEN, E.ADAPTIVE]
        else:
            remedies = [E.ADAPTIVE, E.FROZEN, E.INIT, E.NORM]
        found.append(LayerVerdict(weight, STALLED, text, remedies,
                                  {"update_ratio": own, "peer_update_ratio": peers, "steps": steps}))
    return found


__all__ = ["check"]

"""Unstable: NaN/Inf in gradients, weights, activations or errors, or a run whose loss went non-finite."""

from __future__ import annotations

import numpy as np

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import UNSTABLE, LayerVerdict

_REMEDIES = [E.LOWER_LR, E.CLIP, E.DATA, E.STABLE_LOSS]
LOSS_LAYER = "(loss)"  # the entry for a loss that went non-finite before any recorded statistic


def _bad_steps(stat: str, values: np.ndarray) -> np.ndarray:
    """Mask of steps with non-finite entries: a positive NaN/Inf count, or a statistic that is itself NaN/Inf."""
    if stat == R.NONFINITE:
        return values > 0
    return ~np.isfinite(values)


def _owner(frames: E.Frames, kind: str, layer: str, tensor: str) -> str:
    """The weight layer a non-finite record belongs to: itself, its module's weight, or the one before the module."""
    name = f"{layer}.{tensor}"
    if kind in (R.GRAD, R.WEIGHT) and name in frames.weight_layers:
        return name
    by_module = {E.module_of(w): w for w in frames.weight_layers}
    if layer in by_module:
        return by_module[layer]
    if layer in frames.modules:
        earlier = frames.modules[: frames.modules.index(layer)]
        before = [by_module[m] for m in earlier if m in by_module]
        if before:
            return before[-1]
    return name if kind in (R.GRAD, R.WEIGHT) else layer


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """One verdict per weight layer with non-finite records (plus ``(loss)`` for a diverged run without any).

    Requires: ``nonfinite`` counts (or any statistic, which turns NaN/Inf with its tensor); the run status.
    """
    first: dict[str, tuple[int, str]] = {}
    steps: dict[str, set[int]] = {}
    for (kind, stat, layer, tensor), series in frames.series.items():
        if stat == R.UPDATE_RATIO:  # infinite for a zero-initialised bias: not a blow-up
            continue
        bad = series.index[_bad_steps(stat, series.to_numpy())]
        if len(bad) == 0:
            continue
        owner = _owner(frames, kind, layer, tensor)
        what = f"{layer}.{tensor}'s {kind}" if tensor != "output" else f"{layer}'s output {kind}"
        step = int(bad.min())
        if owner not in first or step < first[owner][0]:
            first[owner] = (step, what)
        steps.setdefault(owner, set()).update(int(s) for s in bad)
    diverged = frames.status == R.DIVERGED
    found = []
    for owner, (step, what) in sorted(first.items(), key=lambda kv: kv[1][0]):
        text = (f"non-finite values (NaN/Inf) from step {step}, first in {what}; "
                f"in {len(steps[owner])} recorded steps")
        found.append(LayerVerdict(owner, UNSTABLE, text, list(_REMEDIES),
                                  {"first_step": step, "nonfinite_steps": len(steps[owner])}))
    if diverged:
        ran = frames.summary.get("steps")
        where = frames.first_nonfinite
        if found:
            lead = found[0]
            lead.evidence = f"the run diverged after {ran} steps; " + lead.evidence
        else:
            loss = frames.summary.get("last_batch_loss")
            found.append(LayerVerdict(LOSS_LAYER, UNSTABLE,
                                      f"the run diverged: the training loss became non-finite ({loss}) after "
                                      f"{ran} steps, before any recorded statistic did"
                                      + (f"; first non-finite value at step {where['step']} in {where['layer']}"
                                         if where else ""), list(_REMEDIES), {"steps": ran}))
    return found


__all__ = ["LOSS_LAYER", "check"]

"""Unstable: NaN/Inf entries in gradients, weights, activations or errors, or a run whose loss went non-finite.

The evidence is the ``nonfinite`` count of entries, as in ``Probe.first_nonfinite``, never a statistic
that is itself NaN/Inf: a float32 sum of huge but finite values overflows to Inf, and a zero-initialised
bias has an infinite update ratio, yet neither tensor holds a NaN or Inf. Such statistics are left out
of the verdict and named in a note.

Steps a GradScaler skipped (kind ``step``, ``skipped`` = 1) are not instability: an fp16 loss scale is
found by overflowing now and then. A few skips, or skips while the scale calibrates at the start, get
a note; overflow that persists (the loss scale fallen below :data:`MIN_LOSS_SCALE`, or more than
:data:`OVERFLOW_SHARE` of the second half's steps skipped) is an ``unstable`` verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import UNSTABLE, LayerVerdict

_REMEDIES = [E.LOWER_LR, E.CLIP, E.DATA, E.STABLE_LOSS]
LOSS_LAYER = "(loss)"  # the entry for a loss that went non-finite before any recorded statistic
SCALER_LAYER = "(loss scale)"  # the entry for persistent overflow when no culprit parameter was recorded
OVERFLOW_SHARE = 0.05  # skipped share of the second half's steps above which overflow is persistent
MIN_LOSS_SCALE = 1.0  # a scale below 1 means gradients overflow fp16 even unscaled: persistent
_BF16 = "train in bfloat16 autocast (fp32's range: no loss scaling, no overflow) instead of float16"
_OVERFLOW_REMEDIES = [E.LOWER_LR, E.CLIP, _BF16, E.STABLE_LOSS]


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


def _what(kind: str, layer: str, tensor: str) -> str:
    return f"{layer}.{tensor}'s {kind}" if tensor != "output" else f"{layer}'s output {kind}"


def _overflow(frames: E.Frames) -> dict[str, Any] | None:
    """Skipped steps, their culprits and the loss scale, or None if no step was skipped.

    Requires: kind ``step`` stats ``skipped``, ``loss_scale`` and ``first_nonfinite_grad``.
    """
    skipped = frames.get(R.STEP, R.SKIPPED, "", R.STEP_TENSOR)
    if skipped is None or not (skipped > 0).any():
        return None
    bad = [int(s) for s in skipped.index[skipped.to_numpy() > 0]]
    last = max(int(series.index.max()) for series in frames.series.values() if len(series))
    steps = max(int(frames.summary.get("steps") or 0), last + 1)
    late = [s for s in bad if s >= steps // 2]
    scale = frames.get(R.STEP, R.LOSS_SCALE, "", R.STEP_TENSOR)
    final = float(scale.iloc[-1]) if scale is not None and len(scale) else None
    culprits: dict[str, int] = {}
    for (kind, stat, layer, tensor), series in frames.series.items():
        if kind == R.STEP and stat == R.FIRST_NONFINITE_GRAD:
            culprits[f"{layer}.{tensor}"] = len(series)
    persistent = ((final is not None and final < MIN_LOSS_SCALE)
                  or (len(late) >= 2 and len(late) > OVERFLOW_SHARE * (steps - steps // 2)))
    return {"skipped": bad, "steps": steps, "late": len(late), "final_scale": final,
            "min_scale": float(scale.min()) if scale is not None and len(scale) else None,
            "culprits": culprits, "persistent": persistent}


def _overflow_text(o: dict[str, Any]) -> str:
    shown = ", ".join(map(str, o["skipped"][:5])) + (", ..." if len(o["skipped"]) > 5 else "")
    where = max(o["culprits"], key=o["culprits"].get) if o["culprits"] else None
    return (f"the GradScaler skipped {len(o['skipped'])} of {o['steps']} steps (steps {shown}; "
            f"{o['late']} in the second half) for NaN/Inf gradients"
            + (f", first (in backward order) in {where}" if where else "")
            + (f"; loss scale now {o['final_scale']:g}, lowest {o['min_scale']:g}" if o["final_scale"] is not None
               else ""))


def notes(frames: E.Frames) -> list[str]:
    """Tensors whose statistics were NaN/Inf at steps where no entry was counted non-finite (not judged).

    Requires: any statistic and, per tensor, its ``nonfinite`` count.
    """
    uncounted: dict[tuple[str, str, str], int] = {}
    unchecked: set[tuple[str, str, str]] = set()
    for (kind, stat, layer, tensor), series in frames.series.items():
        if stat in (R.NONFINITE, R.UPDATE_RATIO):  # update ratio: infinite for a zero-initialised bias
            continue
        bad = series.index[~np.isfinite(series.to_numpy())]
        if len(bad) == 0:
            continue
        counts = frames.get(kind, R.NONFINITE, layer, tensor)
        if counts is None:
            unchecked.add((kind, layer, tensor))
            continue
        clean = [s for s in bad if s in counts.index and counts[s] == 0]
        if clean:
            uncounted[(kind, layer, tensor)] = max(uncounted.get((kind, layer, tensor), 0), len(clean))
    out = []
    overflow = _overflow(frames)
    if overflow is not None and not overflow["persistent"]:
        out.append("occasional scaler overflow (normal under fp16 loss scaling, not unstable): "
                   + _overflow_text(overflow))
    if uncounted:
        items = ", ".join(f"{_what(*key)} ({n} steps)" for key, n in uncounted.items())
        out.append(f"not unstable: statistics of {items} were NaN/Inf although the tensor held no NaN/Inf entry "
                   "(e.g. a float32 sum of huge finite values overflowing); left out as missing")
    counted = any(stat == R.NONFINITE and (series > 0).any() for (_, stat, _, _), series in frames.series.items())
    if unchecked and not counted and frames.status != R.DIVERGED:  # otherwise already unstable: no news
        items = ", ".join(_what(*key) for key in sorted(unchecked))
        out.append(f"statistics of {items} were NaN/Inf but no nonfinite count was recorded for them, so they "
                   "were not judged; record the 'nonfinite' statistic to check them")
    return out


def check(frames: E.Frames, thresholds: Thresholds) -> list[LayerVerdict]:
    """One verdict per weight layer with non-finite entries (plus ``(loss)`` for a diverged run without any).

    Requires: ``nonfinite`` counts; the run status and summary (``steps``, ``last_batch_loss``).
    """
    first: dict[str, tuple[int, str]] = {}
    steps: dict[str, set[int]] = {}
    for (kind, stat, layer, tensor), series in frames.series.items():
        if stat != R.NONFINITE:
            continue
        bad = series.index[series.to_numpy() > 0]
        if len(bad) == 0:
            continue
        owner = _owner(frames, kind, layer, tensor)
        step = int(bad.min())
        if owner not in first or step < first[owner][0]:
            first[owner] = (step, _what(kind, layer, tensor))
        steps.setdefault(owner, set()).update(int(s) for s in bad)
    found = []
    for owner, (step, what) in sorted(first.items(), key=lambda kv: kv[1][0]):
        text = (f"non-finite values (NaN/Inf) from step {step}, first in {what}; "
                f"in {len(steps[owner])} recorded steps")
        found.append(LayerVerdict(owner, UNSTABLE, text, list(_REMEDIES),
                                  {"first_step": step, "nonfinite_steps": len(steps[owner])}))
    overflow = _overflow(frames)
    if overflow is not None and overflow["persistent"]:
        where = max(overflow["culprits"], key=overflow["culprits"].get) if overflow["culprits"] else None
        owner = _owner(frames, R.GRAD, *where.rsplit(".", 1)) if where else SCALER_LAYER
        found.append(LayerVerdict(owner, UNSTABLE, "persistent fp16 overflow: " + _overflow_text(overflow),
                                  list(_OVERFLOW_REMEDIES),
                                  {"skipped_steps": len(overflow["skipped"]), "steps": overflow["steps"],
                                   "loss_scale": overflow["final_scale"]}))
    if frames.status == R.DIVERGED:
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


__all__ = ["LOSS_LAYER", "MIN_LOSS_SCALE", "OVERFLOW_SHARE", "SCALER_LAYER", "check", "notes"]

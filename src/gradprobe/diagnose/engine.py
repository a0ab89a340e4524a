"""``diagnose``: run every rule over a probe's or a run's records and combine the findings into one verdict per layer.

Order of severity (the overall verdict is the most severe layer verdict): unstable > exploding >
vanishing > dead > saturated > stalled > healthy; a frozen layer (requires_grad False) is listed as
``frozen`` without statistics and never makes the overall verdict worse than healthy. Dead and
saturated units are causes that the rules see separately from their symptoms: a vanishing or
stalled layer is attributed to dead or saturated units at the same layer or nearer the output (they
block the gradient on its way back) or to dead units just before it (they feed it zeros), and takes
their verdict and remedies.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gradprobe import records as R
from gradprobe.diagnose import dead_units, exploding, residual, saturation, stalled, unstable, vanishing
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import (
    DEAD,
    FROZEN,
    HEALTHY,
    SATURATED,
    STALLED,
    VANISHING,
    Diagnosis,
    LayerVerdict,
    severity,
)
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import Run, load_run

RULES = (unstable, exploding, vanishing, dead_units, saturation, stalled)


def _frames(source: Any, weight_layers: list[str] | None) -> E.Frames:
    """Index the records of a Probe, a Run, a run id or a tidy frame."""
    if isinstance(source, str):
        source = load_run(source)
    if isinstance(source, Run):
        return E.build_frames(source.frame(), weight_layers or source.summary.get("weight_layers"),
                              status=source.status, first_nonfinite=source.summary.get("first_nonfinite"),
                              summary=source.summary)
    if isinstance(source, pd.DataFrame):
        missing = set(R.STAT_COLUMNS) - set(source.columns)
        if missing:
            raise GradprobeError(f"source: the frame lacks columns {sorted(missing)}; "
                                 f"a tidy frame has {', '.join(R.STAT_COLUMNS)}")
        return E.build_frames(source, weight_layers)
    model, frame = getattr(source, "model", None), getattr(source, "frame", None)
    if model is not None and callable(frame) and hasattr(model, "named_parameters"):  # a Probe
        names = weight_layers or [n for n, p in model.named_parameters() if p.dim() >= 2]
        return E.build_frames(frame(), names, first_nonfinite=getattr(source, "first_nonfinite", None))
    raise GradprobeError(f"source: {type(source).__name__} cannot be diagnosed; "
                         "pass a gradprobe Probe, a stored Run or run id, or a tidy stats frame")


def _frozen(source: Any, frames: E.Frames) -> tuple[list[str], list[str]]:
    """``(frozen weight layers, all weight layers in depth order)`` from the live model or the run summary."""
    model: Any = getattr(source, "model", None)
    if not isinstance(source, (str, Run, pd.DataFrame)) and hasattr(model, "named_parameters"):
        weights = [(n, p.requires_grad) for n, p in model.named_parameters() if p.dim() >= 2]
        return [n for n, trained in weights if not trained], [n for n, _ in weights]
    frozen = list(frames.summary.get("frozen_layers") or [])
    return frozen, list(frames.summary.get("weight_layers") or frames.weight_layers)


def _with_frozen(layers: list[LayerVerdict], frozen: list[str], order: list[str]) -> list[LayerVerdict]:
    """``layers`` plus a ``frozen`` entry per frozen layer, at its place in depth order."""
    if not frozen:
        return layers
    rank = {name: i for i, name in enumerate(order)}
    judged = {e.layer for e in layers}  # a layer frozen after some recorded steps keeps its verdict
    entries = layers + [LayerVerdict(name, FROZEN, f"requires_grad is False: {name} is not trained, so it has "
                                     "no gradient to judge (set requires_grad=True if it should learn)")
                        for name in frozen if name not in judged]
    return sorted(entries, key=lambda e: rank.get(e.layer, -1))  # stable: entries such as (loss) stay first


def _cause_for(finding: LayerVerdict, causes: list[LayerVerdict], order: dict[str, int]) -> tuple[LayerVerdict, str]:
    """The nearest dead/saturated finding that explains a symptom, and how, or ``(finding, "")`` if none does."""
    at = order.get(finding.layer, -1)
    later = [c for c in causes if order.get(c.layer, -2) >= at >= 0]
    if later:
        return min(later, key=lambda c: order[c.layer]), "which block the gradient on its way back"
    before = [c for c in causes if c.verdict == DEAD and order.get(c.layer, -2) == at - 1 >= 0]
    if before:
        return before[0], "which feed it zeros"
    return finding, ""


def _attribute(findings: list[LayerVerdict], order: dict[str, int]) -> None:
    """Give vanishing/stalled findings explained by dead or saturated units their cause's verdict, in place."""
    causes = [f for f in findings if f.verdict in (DEAD, SATURATED)]
    for f in findings:
        if f.verdict not in (VANISHING, STALLED):
            continue
        cause, how = _cause_for(f, causes, order)
        if cause is f:
            continue
        act = cause.numbers.get("activation", cause.layer)
        what = "dead units" if cause.verdict == DEAD else "saturated units"
        f.evidence = f"{f.verdict}, explained by {what} in {act}, {how}: {f.evidence}"
        f.numbers["explained_by"] = cause.layer
        f.verdict, f.remedies = cause.verdict, list(cause.remedies)


def _healthy(frames: E.Frames, t: Thresholds, weight: str) -> LayerVerdict:
    """A healthy layer still shows its numbers: gradient flow, units and update size."""
    parts: list[str] = []
    numbers: dict[str, Any] = {}
    flow = residual.healthy_flow(frames, weight, t)
    if flow is not None:
        parts.append(flow[0])
        numbers.update(flow[1])
    act = frames.activation_after(weight)
    for stat, words in ((R.DEAD_FRAC, "dead"), (R.SATURATED_FRAC, "saturated")):
        frac = E.window_median(frames.output(R.ACTIVATION, stat, act), t)
        if frac is not None:
            parts.append(f"{E.pct(frac[0])} of {act}'s units {words}")
            numbers[stat] = frac[0]
    upd = E.window_median(frames.param(R.WEIGHT, R.UPDATE_RATIO, weight), t)
    if upd is not None:
        parts.append(f"update ratio {E.sci(upd[0])}")
        numbers["update_ratio"] = upd[0]
    return LayerVerdict(weight, HEALTHY, "; ".join(parts) or "no statistics recorded", [], numbers)


def _merge(findings: list[LayerVerdict], frames: E.Frames, t: Thresholds) -> list[LayerVerdict]:
    """One verdict per layer: the most severe finding leads, the others follow in its evidence."""
    names = list(dict.fromkeys([f.layer for f in findings if f.layer not in frames.weight_layers]))
    merged = []
    for name in names + list(frames.weight_layers):
        # At equal severity a layer's own cause leads, before a symptom put down to it.
        own = sorted((f for f in findings if f.layer == name),
                     key=lambda f: (severity(f.verdict), "explained_by" in f.numbers))
        if not own:
            merged.append(_healthy(frames, t, name))
            continue
        lead = own[0]
        evidence = lead.evidence + "".join(f"; also {f.verdict}: {f.evidence}" for f in own[1:])
        remedies = list(dict.fromkeys(r for f in own for r in f.remedies))
        numbers = dict(lead.numbers)
        numbers.update({("explained" if "explained_by" in f.numbers else f.verdict): f.numbers for f in own[1:]})
        merged.append(LayerVerdict(name, lead.verdict, evidence, remedies, numbers))
    return merged


def _notes(frames: E.Frames, t: Thresholds) -> list[str]:
    steps = frames.param(R.GRAD, R.MEAN_ABS, frames.weight_layers[0]) if frames.weight_layers else None
    n = 0 if steps is None else len(steps)
    ref = frames.output_input()
    span = "all" if t.flow_window_fraction == 1 else f"the last {t.flow_window_fraction:.0%} of"
    notes = [(f"gradient flow: medians over {span} {n} recorded steps; units and updates: over the last "
              f"{t.window_fraction:.0%} (at least {t.min_window} steps)")]
    if frames.weight_layers:
        against = f"the error that {frames.weight_layers[-1]} sends back into {ref}" if ref else "the output layer"
        notes.append(f"ratios compare each layer with {against}")
    return notes + residual.notes(frames)


def diagnose(source: Any, thresholds: Thresholds | None = None, *,
             weight_layers: list[str] | None = None, structure: Any = None) -> Diagnosis:
    """Verdicts on a network's gradients: overall and per weight matrix, with evidence and ranked remedies.

    Args:
        source: a ``Probe`` (live), a stored ``Run`` or run id, or a tidy stats frame.
        thresholds: limits of the rules (default :class:`Thresholds`).
        weight_layers: weight matrices first to output; default from the model (parameters with >= 2 dims,
            in ``named_parameters`` order), the run summary, or grads named ``weight*`` in recorded order.
        structure: the model's wiring from ``gradprobe.structure.model_structure`` (default: the run
            summary's ``structure`` or a probe's ``structure`` attribute); with it, residual streams,
            normalisation layers and tied weights are judged as ``diagnose.residual`` describes.

    Returns:
        The :class:`Diagnosis`; ``.verdict`` is the most severe layer verdict.

    Raises:
        GradprobeError: for a source that cannot be read or holds no statistics to judge.
    """
    t = thresholds or Thresholds()
    frames = _frames(source, weight_layers)
    frames = residual.with_structure(frames, residual.structure_of(source, frames, structure))
    findings = [f for rule in RULES for f in rule.check(frames, t)]
    if not frames.weight_layers and not findings:
        raise GradprobeError("source: no gradient statistics of weight matrices were recorded; record at "
                             "least one optimizer step with the probe's params covering the weights")
    _attribute(findings, {w: i for i, w in enumerate(frames.weight_layers)})
    frozen, order = _frozen(source, frames)
    layers = _with_frozen(_merge(findings, frames, t), frozen, order)
    verdict = min((e.verdict for e in layers if e.verdict != FROZEN), key=severity, default=HEALTHY)
    return Diagnosis(verdict, layers, _notes(frames, t) + unstable.notes(frames))


__all__ = ["RULES", "diagnose"]

"""When a verdict began and the words of its alert: the per-step number behind each verdict, against the rule's limit.

:class:`gradprobe.alerts.AlertMonitor` judges a window of recorded steps with the rules; this module then finds the
step a layer's new verdict began (the first step of the window's last stretch where the number that decided it is
past the rule's limit) and words the alert.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.evidence import Frames, bare, pct, sci, window_median
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import EXPLODING, HEALTHY, UNSTABLE, LayerVerdict

Fields = tuple[int, str, str, str, str, float]  # step, layer, verdict, previous, message, evidence (an Alert's)


def _ratio(num: pd.Series | None, den: pd.Series | None) -> pd.Series | None:
    if num is None or den is None:
        return None
    both = (num / den).dropna()
    return both if len(both) else None


Past = Callable[[pd.Series, float], pd.Series]  # per step: is the value past the limit, as the rule compares


def _signal(frames: Frames, entry: LayerVerdict, t: Thresholds) -> tuple[str, pd.Series | None, float, Past]:
    """``(what, per-step series, limit, past)``: the number that decided ``entry`` and the rule's comparison."""
    n, layer = entry.numbers, entry.layer
    flow_limit, flow_past = ((t.exploding_ratio, _above) if entry.verdict == EXPLODING
                             else (t.vanishing_ratio, _below))
    if "dead_frac" in n and "explained_by" not in n:
        return ("dead_frac", frames.output(R.ACTIVATION, R.DEAD_FRAC, n.get("activation")), t.dead_fraction,
                _at_least)
    if "saturated_frac" in n and "explained_by" not in n:
        return ("saturated_frac", frames.output(R.ACTIVATION, R.SATURATED_FRAC, n.get("activation")),
                t.saturated_fraction, _at_least)
    if "error_ratio" in n:
        return ("error_ratio", _ratio(frames.output(R.DELTA, R.MEAN_ABS, E.module_of(layer)),
                                      frames.output(R.DELTA, R.MEAN_ABS, frames.output_input())), flow_limit, flow_past)
    if "stream_ratio" in n:
        stream = _ratio(frames.output(R.DELTA, R.MEAN_ABS, n["stream_point"]),
                        frames.output(R.DELTA, R.MEAN_ABS, n["stream_reference"]))
        return "stream_ratio", stream, flow_limit, flow_past
    if "grad_ratio" in n:
        peer = n.get("grad_reference") or frames.weight_layers[-1]
        return ("grad_ratio", _ratio(frames.param(R.GRAD, R.MEAN_ABS, layer), frames.param(R.GRAD, R.MEAN_ABS, peer)),
                flow_limit, flow_past)
    if "peer_update_ratio" in n:
        return ("update_ratio", frames.param(R.WEIGHT, R.UPDATE_RATIO, layer),
                t.stalled_ratio * float(n["peer_update_ratio"]), _below)
    return "", None, math.nan, _below


def _below(series: pd.Series, limit: float) -> pd.Series:
    return series < limit  # vanishing flow ratios, stalled update ratios


def _above(series: pd.Series, limit: float) -> pd.Series:
    return series > limit  # exploding flow ratios


def _at_least(series: pd.Series, limit: float) -> pd.Series:
    return series >= limit  # dead and saturated fractions


def _onset(series: pd.Series | None, limit: float, past: Past, hit: bool) -> int | None:
    """First step of the window's last stretch where ``series`` is past ``limit`` (``hit``) or not (``not hit``).

    The stretch is the trailing one if the latest step shows it, else the last one before (the rules
    judge medians, so the latest step may disagree); None if no step does.
    """
    if series is None or series.empty:
        return None
    match = past(series, limit).to_numpy()
    match = match if hit else ~match
    steps = series.index.to_numpy()
    shown = match.nonzero()[0]
    if not len(shown):
        return None
    end = shown[-1]
    misses = (~match[: end + 1]).nonzero()[0]
    return int(steps[misses[-1] + 1] if len(misses) else steps[0])


def alert_for(frames: Frames, entry: LayerVerdict, before: LayerVerdict | None, t: Thresholds) -> Fields:
    """The alert's fields for a layer whose verdict became ``entry.verdict`` (from ``before``), judged on ``frames``."""
    last = max((int(s.index.max()) for s in frames.series.values() if len(s)), default=0)
    previous = before.verdict if before is not None else ""
    if entry.verdict == UNSTABLE:
        step = int(entry.numbers.get("first_step", last))
        return (step, entry.layer, entry.verdict, previous,
                     f"{entry.layer}: non-finite values (NaN/Inf) from step {step}",
                     float(entry.numbers.get("nonfinite_steps", math.nan)))
    if entry.verdict == HEALTHY and before is not None:
        what, series, limit, past = _signal(frames, before, t)
        onset = _onset(series, limit, past, hit=False)
        begun = last if onset is None else onset
        flow = what.endswith("_ratio") and what != "update_ratio"
        now = window_median(series, t, t.flow_window_fraction if flow else None)
        value = math.nan if now is None else now[0]
        return (begun, entry.layer, HEALTHY, previous,
                     f"{_module(entry.layer)} is healthy again since step {begun} (was {previous}; "
                     f"{what or 'key number'} now {value:.3g})", value)
    what, series, limit, past = _signal(frames, entry, t)
    onset = _onset(series, limit, past, hit=True)
    step = last if onset is None else onset
    value = float(entry.numbers.get(what, math.nan)) if what else math.nan
    return (step, entry.layer, entry.verdict, previous, _message(entry, what, value, limit, step, last), value)


def _module(layer: str) -> str:
    return layer.rpartition(".")[0] or layer


def _message(entry: LayerVerdict, what: str, value: float, limit: float, step: int, last: int) -> str:
    """The alert in words, after the shape of the verdict's own evidence."""
    n, module = entry.numbers, _module(entry.layer)
    window = f"median over the last {n.get('steps', '?')} recorded steps"
    if what in ("dead_frac", "saturated_frac"):
        state = "units have been dead" if what == "dead_frac" else "outputs have been saturated"
        return (f"{pct(value)} of {n.get('activation')}'s {state} since step {step} "
                f"(after {entry.layer}; {window})")
    if what == "update_ratio":
        span = f" for {last - step} steps" if last > step else ""
        head = (f"update ratio of {module} below {sci(limit)}{span} (since step {step}; median {sci(value)}, "
                f"under {bare(limit / float(n['peer_update_ratio']))} of the other layers')")
    else:
        trend = "rose above" if entry.verdict == "exploding" else "fell below"
        symptom = "exploding" if entry.verdict == "exploding" else "vanishing"
        whose = {"error_ratio": "its back-propagated error", "grad_ratio": "its gradient",
                 "stream_ratio": f"the residual stream's error at {n.get('stream_point')}"}.get(what, "its gradient")
        than = f"{n.get('stream_reference')}'s" if what == "stream_ratio" else (
            f"{n.get('grad_reference')}'s" if "grad_reference" in n else "the output layer's")
        head = (f"{module} started {symptom} at step {step} ({whose} {trend} {bare(limit)} of {than}: "
                f"{bare(value)}, {window})")
    cause = n.get("explained_by")
    if cause is not None:
        what_units = "dead units" if entry.verdict == "dead" else "saturated units"
        head += f"; explained by {what_units} after {cause}"
    return head


__all__ = ["Fields", "alert_for"]

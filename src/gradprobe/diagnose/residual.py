"""Gradient flow through residual streams, normalisation layers and tied weights, read from a model's structure.

The plain rule divides a layer's error by the error the output layer sends back, which is a
product of per-layer gains only in a plain stack. With a structure (``gradprobe.structure``):

* Along the residual stream, errors are compared where they are the stream's own error: at the
  module that closes each residual branch (its output error is the error of the sum it joins) or,
  before the first join, at the stream's entry. Each is divided by the error at the last join before
  the head. A stream sums over paths, so this ratio stays near 1 in a healthy net and only a branch
  that outweighs its skip (large init, no normalisation) makes it grow block after block.
* Inside a branch, weight gradients are compared with the branch's last weight layer. The branch's
  errors are scaled by design (GPT-2 shrinks its output projections 1/sqrt(2L), BatchNorm divides
  the error by its input's scale) and the layer's input scale pays it back in dL/dW = delta x^T.
* Outside the stream, the plain rule holds, except that an error ratio across a normalisation
  layer is replaced by the gradient ratio, for the same reason.
* A tied weight used by the output module is the output layer: its gradient is mostly the head's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gradprobe import records as R
from gradprobe.diagnose import evidence as E
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.verdicts import EXPLODING
from gradprobe.errors import GradprobeError


@dataclass(frozen=True)
class Structure:
    """A model's wiring as ``gradprobe.structure.model_structure`` reports it (see there for the fields)."""

    modules: tuple[str, ...]
    output: str | None
    norms: frozenset[str]
    tied: dict[str, tuple[str, ...]]
    joins: tuple[tuple[str | None, tuple[str, ...]], ...]  # (exit, branch) in forward order
    entry: tuple[str, ...]
    bilinear: frozenset[str] = frozenset()  # feed a product of two activations (attention q, k, v; gates)

    @classmethod
    def parse(cls, data: Any) -> Structure:
        """Validate a structure dict (as stored in a run's summary).

        Raises:
            GradprobeError: naming the field that is missing or malformed.
        """
        if isinstance(data, Structure):
            return data
        if not isinstance(data, dict):
            raise GradprobeError(f"structure: {type(data).__name__} is not a dict; pass model_structure(model, x)")
        try:
            return cls(tuple(data["modules"]), data["output"], frozenset(data["norms"]),
                       {k: tuple(v) for k, v in data["tied"].items()},
                       tuple((j["exit"], tuple(j["branch"])) for j in data["joins"]), tuple(data["entry"]),
                       frozenset(data.get("bilinear", ())))  # runs stored before it was read have none
        except (KeyError, TypeError, AttributeError) as err:
            raise GradprobeError(f"structure: malformed ({err!r}); it needs modules, output, norms, tied, joins "
                                 "and entry as model_structure returns them") from err

    def modules_of(self, weight: str) -> tuple[str, ...]:
        """The modules that use a parameter: all users of a tied one, else the module that owns it."""
        return self.tied.get(weight, (E.module_of(weight),))

    def last_call(self, weight: str) -> int | None:
        """Call index of the last module that uses ``weight`` in the example pass, or None."""
        calls = [self.modules.index(m) for m in self.modules_of(weight) if m in self.modules]
        return max(calls) if calls else None


def with_structure(frames: E.Frames, structure: Any) -> E.Frames:
    """``frames`` with a structure attached and its weight layers in call order, the output layer last."""
    if structure is None:
        return frames
    s = Structure.parse(structure)
    original = {w: i for i, w in enumerate(frames.weight_layers)}

    def key(w: str) -> tuple[bool, int]:
        at = s.last_call(w)
        return s.output in s.modules_of(w), len(s.modules) + original[w] if at is None else at

    return dataclasses.replace(frames, weight_layers=tuple(sorted(frames.weight_layers, key=key)), structure=s)


def structure_of(source: Any, frames: E.Frames, given: Any) -> Any:
    """The structure to use: the one given, else the run summary's, else a probe's ``structure`` attribute."""
    if given is not None:
        return given
    return frames.summary.get("structure") or getattr(source, "structure", None)


@dataclass(frozen=True)
class Measure:
    """One comparison a flow rule judges: its ratio, its words and its numbers."""

    ratio: E.Ratio
    text: str
    numbers: dict[str, Any]
    per_join: float | None = None  # along the stream: the geometric-mean gain per residual join

    def passes(self, t: Thresholds, verdict: str) -> bool:
        """Whether this comparison shows ``verdict`` (exploding or vanishing) under ``t``."""
        if verdict == EXPLODING:
            return self.ratio.ratio > t.exploding_ratio and (self.per_join is None or self.per_join > t.stream_gain)
        return self.ratio.ratio < t.vanishing_ratio and (self.per_join is None or self.per_join < 1 / t.stream_gain)


def _stream(frames: E.Frames, point: str, ref: str, joins: int, t: Thresholds) -> Measure | None:
    """The stream's error at ``point`` over its error at ``ref``, ``joins`` residual joins nearer the head."""
    r = E.ratio(frames.output(R.DELTA, R.MEAN_ABS, point), frames.output(R.DELTA, R.MEAN_ABS, ref), t,
                t.flow_window_fraction)
    if r is None:
        return None
    gain = r.ratio ** (1 / joins) if r.ratio > 0 else 0.0
    text = (f"the residual stream's error at {point} is {E.times(r.ratio)} its error at {ref}, the last join before "
            f"the head, {E.bare(gain)} per join over {joins} joins (mean |dL/dz| {E.sci(r.num)} vs {E.sci(r.den)}; "
            f"{E.bare(r.first)} in the first {r.edge} steps, {E.bare(r.last)} in the last {r.edge})")
    return Measure(r, text, {"stream_ratio": r.ratio, "stream_gain_per_join": gain, "stream_point": point,
                             "stream_reference": ref, "stream_mean_abs": r.num, "reference_stream_mean_abs": r.den,
                             "stream_ratio_first": r.first, "stream_ratio_last": r.last, "steps": r.steps}, gain)


def _grads(frames: E.Frames, weight: str, peer: str, t: Thresholds, why: str) -> Measure | None:
    r = E.ratio(frames.param(R.GRAD, R.MEAN_ABS, weight), frames.param(R.GRAD, R.MEAN_ABS, peer), t,
                t.flow_window_fraction)
    if r is None:
        return None
    text = (f"{weight} receives {E.times(r.ratio)} the gradient of {peer}, {why} "
            f"(mean |g| {E.sci(r.num)} vs {E.sci(r.den)})")
    return Measure(r, text, {"grad_ratio": r.ratio, "grad_reference": peer, "grad_mean_abs": r.num,
                             "reference_grad_mean_abs": r.den, "steps": r.steps})


def _crosses_norm(s: Structure, module: str, ref: str | None) -> bool:
    """Whether a normalisation layer runs after ``module`` and before ``ref`` (or the output) in the example pass."""
    if module not in s.modules:
        return False
    end = s.modules.index(ref) if ref in s.modules else len(s.modules)
    return any(m in s.norms for m in s.modules[s.modules.index(module) + 1:end])


def measures(frames: E.Frames, weight: str, t: Thresholds) -> list[Measure] | None:
    """The comparisons that judge a hidden weight layer's gradient flow; None where the plain rule applies."""
    s = frames.structure
    if not isinstance(s, Structure):
        return None
    module = E.module_of(weight)
    exits = [(j, x) for j, (x, _) in enumerate(s.joins) if x is not None]
    ref = exits[-1][1] if exits else None
    for j, (exit_, branch) in enumerate(s.joins):
        if module not in branch:
            continue
        later = len([x for x in exits if x[0] > j])
        found = [] if exit_ is None or ref is None or not later else [_stream(frames, exit_, ref, later, t)]
        inside = [w for w in frames.weight_layers if E.module_of(w) in branch]
        # A layer feeding a product of two activations (attention's q @ k^T, a gate) gets a gradient scaled by
        # the other factor by construction (query's by the keys, tiny at small init): not depth-wise vanishing.
        if inside and inside[-1] != weight and module not in s.bilinear:
            found.append(_grads(frames, weight, inside[-1], t, f"the last weight layer of residual branch {j}"))
        return [m for m in found if m is not None]
    first = s.modules.index(s.joins[0][1][-1]) if s.joins and s.joins[0][1][-1] in s.modules else -1
    at = s.last_call(weight)
    if s.entry and ref is not None and at is not None and at < first:
        stream = _stream(frames, s.entry[0], ref, len(exits), t)
        return [stream] if stream is not None else []
    if _crosses_norm(s, module, frames.output_input()):
        out = frames.weight_layers[-1]
        grads = _grads(frames, weight, out, t, "the output layer (errors are not compared across a normalisation "
                       "layer, which divides them by its input's scale)")
        return [grads] if grads is not None else []
    return None


def flagged(frames: E.Frames, weight: str, t: Thresholds, verdict: str) -> tuple[str, dict[str, Any]] | None:
    """Evidence of a hidden layer's flow if a comparison that judges it shows ``verdict``, else None."""
    found = measures(frames, weight, t)
    if found is None:
        err, grad = E.flow(frames, weight, t)
        measure = E.flow_measure(frames, err, grad)
        hit = measure is not None and Measure(measure, "", {}).passes(t, verdict)
        return E.describe_flow(weight, err, grad) if hit else None
    return describe(found) if any(m.passes(t, verdict) for m in found) else None


def describe(found: list[Measure]) -> tuple[str, dict[str, Any]]:
    """The comparisons in words and numbers."""
    numbers: dict[str, Any] = {}
    for m in found:
        numbers.update(m.numbers)
    return "; ".join(m.text for m in found) + f"; medians over {numbers.get('steps', 0)} recorded steps", numbers


def healthy_flow(frames: E.Frames, weight: str, t: Thresholds) -> tuple[str, dict[str, Any]] | None:
    """What a healthy layer's flow evidence says: its comparisons, or that it is the output layer."""
    if weight == frames.weight_layers[-1]:
        out = E.window_median(frames.param(R.GRAD, R.MEAN_ABS, weight), t, t.flow_window_fraction)
        if out is None:
            return None
        s = frames.structure
        users = s.tied.get(weight) if isinstance(s, Structure) else None
        tied = f"; tied, used by {', '.join(users)}: its gradient sums both uses" if users else ""
        return f"the output layer, the reference of the ratios (mean |g| {E.sci(out[0])}){tied}", {}
    found = measures(frames, weight, t)
    if found is not None:
        return describe(found) if found else None
    err, grad = E.flow(frames, weight, t)
    return E.describe_flow(weight, err, grad) if err is not None or grad is not None else None


def notes(frames: E.Frames) -> list[str]:
    """How the structure changed the comparisons, for the diagnosis' notes."""
    s = frames.structure
    if not isinstance(s, Structure):
        return []
    exits = [x for x, _ in s.joins if x is not None]
    stream = (f"{len(s.joins)} residual joins: layers in a branch are judged by the stream's error where the "
              f"branch joins it against the last join ({exits[-1]}) and by their gradient against the branch's last "
              "weight layer" if exits else "no residual joins")
    return [f"structure given: {stream}; {len(s.norms)} normalisation layers (no error ratio across them); "
            f"{len(s.tied)} tied weights"]


__all__ = ["Measure", "Structure", "describe", "flagged", "healthy_flow", "measures", "notes", "structure_of",
           "with_structure"]

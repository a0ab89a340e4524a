"""What the rules read: per-layer series from a tidy frame, the layers in depth order, and number wording."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from gradprobe import records as R
from gradprobe.diagnose.thresholds import Thresholds, tail_len

_KEY = ("kind", "stat", "layer", "tensor")

# Remedies, worded once; each rule ranks the ones that fit its evidence.
RELU: Final = "use a ReLU-family activation (ReLU, LeakyReLU, GELU) instead of sigmoid/tanh"
INIT: Final = "use He initialisation for ReLU-family layers, Glorot (Xavier) for tanh/sigmoid"
SMALLER_INIT: Final = "use smaller initial weights: He (ReLU family) or Glorot (tanh/sigmoid) initialisation"
NORM: Final = "add normalisation layers (BatchNorm/LayerNorm) before the activations"
RESIDUAL: Final = "add residual (skip) connections"
DEPTH: Final = "use fewer layers"
CLIP: Final = "clip gradients, e.g. torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"
LOWER_LR: Final = "lower the learning rate"
LEAKY: Final = "use LeakyReLU/ELU/GELU, which pass a gradient for negative inputs"
BIAS: Final = "re-initialise the biases to 0 (or a small positive value) so pre-activations start around 0"
ADAPTIVE: Final = "use an adaptive optimizer (Adam, RMSprop), which rescales each layer's step"
FROZEN: Final = ("check that the layer is not frozen by accident: requires_grad and the learning rate "
                 "of its optimizer param group")
DATA: Final = "check the inputs and the loss for NaN/Inf (log(0), division by zero, bad samples)"
STABLE_LOSS: Final = "use a numerically stable loss on logits (BCEWithLogitsLoss, CrossEntropyLoss)"


@dataclass(frozen=True)
class Frames:
    """A run's statistics keyed by ``(kind, stat, layer, tensor)``, plus the layer order and run state.

    Attributes:
        series: per key, the values by step (mean over duplicate rows), sorted by step.
        weight_layers: weight matrices' parameter names, first layer to output layer.
        modules: recorded module names in forward order (first appearance of their outputs).
        status: the run's status (``records.STATUSES``) or None for a live probe.
        first_nonfinite: ``{step, layer, tensor, kind}`` of the first NaN/Inf statistic, or None.
        summary: the run's summary (``steps``, ``last_batch_loss``, ...), empty for a probe.
        structure: the model's wiring (``diagnose.residual.Structure``), or None for a plain stack.
    """

    series: dict[tuple[str, str, str, str], pd.Series]
    weight_layers: tuple[str, ...]
    modules: tuple[str, ...]
    status: str | None = None
    first_nonfinite: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    structure: Any = None  # residual.Structure; Any because residual imports this module

    def get(self, kind: str, stat: str, layer: str, tensor: str) -> pd.Series | None:
        """Values of one statistic by step, or None if it was not recorded."""
        return self.series.get((kind, stat, layer, tensor))

    def param(self, kind: str, stat: str, name: str) -> pd.Series | None:
        """Values of a parameter's statistic, ``name`` like ``layers.0.weight``."""
        layer, _, tensor = name.rpartition(".")
        return self.get(kind, stat, layer, tensor)

    def output(self, kind: str, stat: str, module: str | None) -> pd.Series | None:
        """Values of a module output's statistic (kind activation or delta)."""
        return None if module is None else self.get(kind, stat, module, "output")

    @property
    def has_errors(self) -> bool:
        """Whether any back-propagated error (kind delta) was recorded."""
        return any(key[0] == R.DELTA for key in self.series)

    def activation_after(self, weight: str) -> str | None:
        """The first module after ``weight``'s module with dead/saturated stats, before the next weight layer."""
        module = module_of(weight)
        if module not in self.modules:
            return None
        later_weights = {module_of(w) for w in self.weight_layers[self.weight_layers.index(weight) + 1:]}
        for name in self.modules[self.modules.index(module) + 1:]:
            if name in later_weights:
                return None
            if any((R.ACTIVATION, s, name, "output") in self.series for s in (R.DEAD_FRAC, R.SATURATED_FRAC)):
                return name
        return None

    def output_input(self) -> str | None:
        """The module whose output feeds the output layer: its error is what the output layer sends back."""
        if not self.weight_layers:
            return None
        # A tied output weight is named after its first user (the embedding); the structure knows the head.
        last = getattr(self.structure, "output", None) or module_of(self.weight_layers[-1])
        if last not in self.modules:
            return None
        before = [m for m in self.modules[: self.modules.index(last)]
                  if (R.DELTA, R.MEAN_ABS, m, "output") in self.series]
        return before[-1] if before else None


def module_of(param: str) -> str:
    """``layers.0.weight`` -> ``layers.0``."""
    return param.rpartition(".")[0]


def build_frames(stats: pd.DataFrame, weight_layers: Sequence[str] | None = None, *, status: str | None = None,
                 first_nonfinite: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> Frames:
    """Index a tidy stats frame (columns ``records.STAT_COLUMNS``) for the rules.

    Args:
        stats: tidy statistics of a probe or a stored run.
        weight_layers: weight matrices first to output; None takes grad-recorded tensors named
            ``weight*`` in order of first appearance.
        status: run status, None for a live probe.
        first_nonfinite: where non-finite values first appeared, if known.
        summary: the run summary, if any.
    """
    series = {key: grp.groupby("step")["value"].mean() for key, grp in stats.groupby(list(_KEY), sort=False)}
    grads = stats[stats["kind"] == R.GRAD]
    recorded = list(dict.fromkeys(grads["layer"] + "." + grads["tensor"]))
    if weight_layers is None:
        weight_layers = [n for n in recorded if n.rpartition(".")[2].startswith("weight")]
    else:
        weight_layers = [n for n in weight_layers if n in set(recorded)]
    outputs = stats[stats["kind"].isin((R.ACTIVATION, R.DELTA))]
    modules = tuple(dict.fromkeys(outputs.loc[outputs["kind"] == R.ACTIVATION, "layer"]))
    modules += tuple(m for m in dict.fromkeys(outputs["layer"]) if m not in modules)
    return Frames(series, tuple(weight_layers), modules, status, first_nonfinite, dict(summary or {}))


@dataclass(frozen=True)
class Ratio:
    """``num / den`` per step, summarised over a window of steps where both are finite and den > 0."""

    ratio: float  # median of the per-step ratios
    num: float  # median of num over the same steps
    den: float  # median of den
    steps: int  # how many steps the medians cover
    first: float  # median ratio over the first window_fraction of steps (how it started)
    last: float  # median ratio over the last window_fraction of steps (how it ended)
    edge: int  # how many steps ``first`` and ``last`` cover


def ratio(num: pd.Series | None, den: pd.Series | None, t: Thresholds, fraction: float) -> Ratio | None:
    """Median of ``num / den`` over the last ``fraction`` of the steps both have (>= ``t.min_window``).

    Both series are indexed by step in ascending order (as :func:`build_frames` makes them); NumPy
    throughout, since the live alerts evaluate this a few dozen times per flush.
    """
    if num is None or den is None:
        return None
    _, i, j = np.intersect1d(num.index.to_numpy(), den.index.to_numpy(), assume_unique=True, return_indices=True)
    n, d = num.to_numpy(np.float64)[i], den.to_numpy(np.float64)[j]
    keep = np.isfinite(n) & np.isfinite(d) & (d > 0)
    n, d = n[keep], d[keep]
    if not n.size:
        return None
    per_step = n / d
    k, n_state = tail_len(n.size, fraction, t.min_window), tail_len(n.size, t.window_fraction, t.min_window)
    return Ratio(float(np.median(per_step[-k:])), float(np.median(n[-k:])), float(np.median(d[-k:])), k,
                 float(np.median(per_step[:n_state])), float(np.median(per_step[-n_state:])), n_state)


def window_median(values: pd.Series | None, t: Thresholds, fraction: float | None = None) -> tuple[float, int] | None:
    """Median of the finite values over the last ``fraction`` of steps (default ``t.window_fraction``), and how many."""
    if values is None:
        return None
    v = values.to_numpy(np.float64)
    finite = v[np.isfinite(v)]
    if not finite.size:
        return None
    k = tail_len(finite.size, t.window_fraction if fraction is None else fraction, t.min_window)
    return float(np.median(finite[-k:])), k


def flow(frames: Frames, weight: str, t: Thresholds) -> tuple[Ratio | None, Ratio | None]:
    """``(error ratio, grad ratio)`` of a hidden weight layer against the output layer, over the flow window.

    The error ratio is mean |dL/dz| of the layer's output over mean |dL/da| of the output layer's input;
    the grad ratio is mean |grad| of the weight over the output layer's weight's.
    """
    out = frames.weight_layers[-1]
    ref = frames.output_input()
    err = ratio(frames.output(R.DELTA, R.MEAN_ABS, module_of(weight)), frames.output(R.DELTA, R.MEAN_ABS, ref),
                t, t.flow_window_fraction) if ref is not None and ref != module_of(weight) else None
    grad = ratio(frames.param(R.GRAD, R.MEAN_ABS, weight), frames.param(R.GRAD, R.MEAN_ABS, out), t,
                 t.flow_window_fraction)
    return err, grad


def flow_measure(frames: Frames, err: Ratio | None, grad: Ratio | None) -> Ratio | None:
    """The ratio the flow rules judge: the error ratio; the grad ratio only if no errors were recorded at all.

    Weight gradients mix the error with the layer's input (dL/dW = delta x^T): in a ReLU net with He
    init the output weight gets ~10x the first layer's gradient while the error stays level, and an
    LSTM's recurrent weights get less than its input weights because h is small. So a layer whose
    error cannot be compared (it shares the output layer's input module) gets no flow verdict.
    """
    if err is not None:
        return err
    return None if frames.has_errors else grad


def describe_flow(weight: str, err: Ratio | None, grad: Ratio | None) -> tuple[str, dict[str, Any]]:
    """Evidence of a layer's gradient flow in words and numbers (keys ``error_*`` and ``grad_*``)."""
    parts: list[str] = []
    numbers: dict[str, Any] = {}
    if err is not None:
        parts.append(f"{module_of(weight)}'s back-propagated error is {times(err.ratio)} the error the "
                     f"output layer sends back (mean |dL/dz| {sci(err.num)} vs {sci(err.den)}; "
                     f"{bare(err.first)} in the first {err.edge} steps, {bare(err.last)} in the last {err.edge})")
        numbers.update(error_ratio=err.ratio, error_mean_abs=err.num, reference_error_mean_abs=err.den,
                       error_ratio_first=err.first, error_ratio_last=err.last, steps=err.steps)
    if grad is not None:
        parts.append(f"{weight} receives {times(grad.ratio)} the output layer's gradient "
                     f"(mean |g| {sci(grad.num)} vs {sci(grad.den)})")
        numbers.update(grad_ratio=grad.ratio, grad_mean_abs=grad.num, output_grad_mean_abs=grad.den)
        numbers.setdefault("steps", grad.steps)
    return "; ".join(parts) + f"; medians over {numbers['steps']} recorded steps", numbers


def times(r: float) -> str:
    """A ratio as a person says it before a noun: ``1/34 of``, ``1/5.6 of``, ``7.2 times``, ``1.5e+08 times``."""
    if r == 0:
        return "zero times"
    if not math.isfinite(r) or r >= 1:
        return f"{bare(r)[:-1]} times"
    return f"{bare(r)} of"


def bare(r: float) -> str:
    """A ratio on its own: ``1/34``, ``0``, ``7.2x``."""
    if math.isnan(r):
        return "nan"
    if math.isinf(r):
        return "infx"
    if r == 0:
        return "0"
    return f"1/{_compact(1 / r)}" if r < 1 else f"{_compact(r)}x"


def _compact(v: float) -> str:
    if v < 10:
        return f"{v:.2g}"
    if v < 1000:
        return f"{v:.0f}"
    return f"{v:.1e}"


def sci(v: float) -> str:
    """A magnitude with 2 significant digits: ``2.1e-05``."""
    return f"{v:.1e}" if math.isfinite(v) else str(v)


def pct(v: float) -> str:
    """A fraction as a percentage: ``62%``."""
    return f"{100 * v:.0f}%"


__all__ = [
    "Frames",
    "Ratio",
    "bare",
    "build_frames",
    "describe_flow",
    "flow",
    "flow_measure",
    "module_of",
    "pct",
    "ratio",
    "sci",
    "times",
    "window_median",
]

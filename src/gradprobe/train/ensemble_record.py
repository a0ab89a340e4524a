"""What the probe would record for each member of an ensemble, computed for all members at once.

The rows (step, layer, tensor, kind, stat) and their order are the single-model Probe's for the
same RecordConfig: per recorded step, module outputs in forward order, deltas in backward order,
gradients, weights and update ratios; histograms of gradient then weight per parameter; the
final weights last. Values stay on the device until a chunk of steps is moved to the host at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.models.mlp import MLP
from gradprobe.quantities import ActivationStats, Family, Inputs, family_of
from gradprobe.train import setup
from gradprobe.train.config import RecordConfig
from gradprobe.train.ensemble_net import BatchedMLP, Pass
from gradprobe.train.ensemble_stats import (
    Segments,
    batched_histogram,
    batched_tensor_stats,
    dead_fraction,
    saturated_fraction,
)


def _select(names: Sequence[str], patterns: Sequence[str] | None, what: str) -> list[str]:
    """The probe's fnmatch selection (None: all), with its error for a pattern list matching nothing."""
    if patterns is None:
        return list(names)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen and patterns:
        raise GradprobeError(f"{what}: {list(patterns)!r} matches nothing; available names include "
                             f"{', '.join(list(names)[:6])}")
    return chosen


@dataclass(frozen=True)
class _Segment:
    """Values of one kind for some tensors: ``len(names) * len(stats)`` columns; each model keeps some stats."""

    kind: str
    names: list[tuple[str, str]]
    stats: tuple[str, ...]
    keep: list[tuple[str, ...]]  # per model


def _template(segments: list[_Segment], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Model ``m``'s rows ``(layer, tensor, kind, stat)`` (n, 4) and their columns (n,) in the values."""
    keys, cols, base = [], [], 0
    for seg in segments:
        for i, (layer, tensor) in enumerate(seg.names):
            for stat in seg.keep[m]:
                keys.append((layer, tensor, seg.kind, stat))
                cols.append(base + i * len(seg.stats) + seg.stats.index(stat))
        base += len(seg.names) * len(seg.stats)
    return np.array(keys, dtype=object).reshape(-1, 4), np.array(cols, dtype=np.int64)


def _frame(steps: np.ndarray, values: np.ndarray, keys: np.ndarray) -> pd.DataFrame:
    """Tidy stats rows for ``steps`` (R,) with ``values`` (R, n) of the rows ``keys`` (n, 4)."""
    reps = len(steps)
    cols = {"step": np.repeat(steps.astype(np.int64), len(keys))}
    for j, name in enumerate(("layer", "tensor", "kind", "stat")):
        cols[name] = np.tile(keys[:, j], reps)
    cols["value"] = values.reshape(-1).astype(np.float64)
    return pd.DataFrame(cols)


class Recorder:
    """Computes, buffers and hands out per-model stats and histogram frames of a group.

    Args:
        record: the group's record section.
        models: the members' MLPs (for parameter/module names and activation families).
        net: the batched network whose flat parameters are recorded.
        every: record cadence in steps; hist_every: histogram cadence (None: none).
    """

    def __init__(self, record: RecordConfig, models: list[MLP], net: BatchedMLP, every: int,
                 hist_every: int | None) -> None:
        self.net, self.every, self.hist_every = net, every, hist_every
        self.options = setup.probe_options(record)
        self.bins = self.options.bins
        m = len(models)
        names = [s.name for s in net.slots]
        chosen = set(_select(names, record.params, "params"))
        self.slots = [s for s in net.slots if s.name in chosen]
        leaves = [n for n, mod in models[0].named_modules() if not list(mod.children())]
        self.modules = [] if record.modules is not None and not record.modules else _select(
            leaves, record.modules, "modules")
        act_q = ActivationStats(self.options.activation_stats, self.options.saturation_tol)
        fams = {n: [family_of(mod.get_submodule(n)) for mod in models] for n in self.modules}
        self._plain = act_q.stats_for(Inputs(torch.zeros(()), family=None))
        self._act: list[_Segment] = []
        for name in self.modules:
            keep = [act_q.stats_for(Inputs(torch.zeros(()), family=f)) for f in fams[name]]
            extra = tuple(s for s in (R.DEAD_FRAC, R.SATURATED_FRAC) if any(s in k for k in keep))
            self._act.append(_Segment(R.ACTIVATION, [(name, "output")], self._plain + extra, keep))
        bounds = [[f.bounds if isinstance(f, Family) and f.bounds else None for f in fams[n]] for n in self.modules]
        self._low, self._high = self._thresholds(bounds)
        self._delta = [_Segment(R.DELTA, [(n, "output")], self.options.delta_stats,
                                [self.options.delta_stats] * m) for n in reversed(self.modules)]
        pnames = [(s.name.rpartition(".")[0], s.name.rpartition(".")[2]) for s in self.slots]
        self.weight_plain = tuple(s for s in self.options.weight_stats if s != R.UPDATE_RATIO)
        self._grad = _Segment(R.GRAD, pnames, self.options.grad_stats, [self.options.grad_stats] * m)
        self._weight = _Segment(R.WEIGHT, pnames, self.weight_plain, [self.weight_plain] * m)
        self.ratio = R.UPDATE_RATIO in self.options.weight_stats
        self._ratio = _Segment(R.WEIGHT, pnames, (R.UPDATE_RATIO,), [(R.UPDATE_RATIO,)] * m)
        full = [s for s in self._act + self._delta + [self._grad, self._weight] + [self._ratio] * self.ratio
                if s.names and s.stats]
        self._full = [_template(full, i) for i in range(m)]
        self._final = [_template([s for s in [self._weight] if s.names and s.stats], i) for i in range(m)]
        self._hist_keys = [(layer, tensor, kind) for layer, tensor in pnames for kind in (R.GRAD, R.WEIGHT)]
        self._segments = Segments([(s.start, s.stop) for s in self.slots], int(net.flat.shape[1]),
                                  [sum(s.shape) for s in self.slots], net.flat.device)
        self._rows: list[tuple[int, torch.Tensor]] = []  # (step, (M, S)) still on the device
        self._hists: list[tuple[int, torch.Tensor]] = []  # (step, (M, 2 * params, bins + 3))
        self._pending: list[torch.Tensor] = []
        self._snapshot: torch.Tensor | None = None

    def _thresholds(self, bounds: list[list[tuple[float, float] | None]]) -> tuple[torch.Tensor, torch.Tensor]:
        tol = self.options.saturation_tol
        low = [[b[0] + tol * (b[1] - b[0]) if b else -np.inf for b in row] for row in bounds]
        high = [[b[1] - tol * (b[1] - b[0]) if b else np.inf for b in row] for row in bounds]
        shape = (len(bounds), self.net.size)
        device = self.net.flat.device
        return (torch.tensor(low, dtype=torch.float32, device=device).reshape(shape),
                torch.tensor(high, dtype=torch.float32, device=device).reshape(shape))

    def due(self, step: int) -> bool:
        """Whether statistics are recorded at ``step``."""
        return step % self.every == 0

    def hist_due(self, step: int) -> bool:
        """Whether histograms are recorded at ``step``."""
        return self.hist_every is not None and step % self.hist_every == 0

    def _param_views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[:, s.start:s.stop] for s in self.slots]  # (M, n) each

    def _params(self, seg: _Segment, flat: torch.Tensor) -> torch.Tensor:
        return self._segments.stats(flat, seg.stats)  # (M, params * stats)

    def _module_outputs(self, p: Pass) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outs, deltas = [], []
        for name in self.modules:
            j = int(name.rpartition(".")[2])
            outs.append((p.zs if j % 2 == 0 else p.hs)[j // 2])
            deltas.append((p.dzs if j % 2 == 0 else p.dhs)[j // 2])
        return outs, deltas

    def before_step(self, p: Pass, flat: torch.Tensor, grad: torch.Tensor) -> None:
        """Activation, delta, gradient and weight statistics of this step (weights before the update)."""
        outs, deltas = self._module_outputs(p)
        parts: list[torch.Tensor] = []
        plain = self._plain
        for i, (seg, out) in enumerate(zip(self._act, outs)):
            if not seg.stats:
                continue
            cols = [batched_tensor_stats(out.reshape(out.shape[0], -1), plain)] if plain else []
            if R.DEAD_FRAC in seg.stats:
                cols.append(dead_fraction(out).unsqueeze(1))
            if R.SATURATED_FRAC in seg.stats:
                cols.append(saturated_fraction(out, self._low[i], self._high[i]).unsqueeze(1))
            parts.append(torch.cat(cols, dim=1))
        for seg, delta in zip(self._delta, reversed(deltas)):
            if seg.stats:
                parts.append(batched_tensor_stats(delta.reshape(delta.shape[0], -1), seg.stats,
                                                  delta.shape[1] + delta.shape[2]))
        if self.slots and self._grad.stats:
            parts.append(self._params(self._grad, grad))
        if self.slots and self.weight_plain:
            parts.append(self._params(self._weight, flat))
        self._pending = parts
        if self.ratio and self.slots:
            self._snapshot = flat.detach().clone()

    def after_step(self, step: int, flat: torch.Tensor) -> None:
        """Close the step's record with the update ratios of the update just taken."""
        parts = self._pending
        if self._snapshot is not None:
            parts = parts + [self._segments.update_ratio(self._snapshot, flat)]
            self._snapshot = None
        if parts:
            self._rows.append((step, torch.cat(parts, dim=1)))
        self._pending = []

    def hists(self, step: int, flat: torch.Tensor, grad: torch.Tensor) -> None:
        """Histograms of every recorded parameter's gradient and weight at ``step``."""
        if not self.slots:
            return
        packed = [batched_histogram(v, self.bins) for pair in zip(self._param_views(grad), self._param_views(flat))
                  for v in pair]
        self._hists.append((step, torch.stack(packed, dim=1)))

    def frames(self, last: list[int]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """Move what is buffered to the host and split it per model, keeping steps <= ``last[m]``."""
        out = []
        steps = np.array([s for s, _ in self._rows], dtype=np.int64)
        values = torch.stack([v for _, v in self._rows]).cpu().numpy() if self._rows else None  # (R, M, S)
        hsteps = np.array([s for s, _ in self._hists], dtype=np.int64)
        hvalues = torch.stack([v for _, v in self._hists]).cpu().numpy() if self._hists else None
        self._rows, self._hists = [], []
        for m, stop in enumerate(last):
            keys, cols = self._full[m]
            keep = steps <= stop
            stats = (_frame(steps[keep], values[keep, m][:, cols], keys) if values is not None
                     else _frame(steps[:0], np.zeros((0, len(keys))), keys))
            hkeep = hsteps <= stop
            hist = self._hist_frame(hsteps[hkeep], hvalues[hkeep, m] if hvalues is not None else None)
            out.append((stats, hist))
        return out

    def _hist_frame(self, steps: np.ndarray, packed: np.ndarray | None) -> pd.DataFrame:
        if packed is None or not len(steps):
            return pd.DataFrame(columns=list(R.HIST_COLUMNS))
        flat = packed.reshape(-1, self.bins + 3).astype(np.float64)  # (R * tensors, bins + 3)
        lo, hi = flat[:, 0:1], flat[:, 1:2]
        edges = np.arange(self.bins + 1) * ((hi - lo) / self.bins) + lo  # np.linspace's own arithmetic
        edges[:, -1] = hi[:, 0]
        counts = flat[:, 2:2 + self.bins].astype(np.int64)
        keys = np.array(self._hist_keys, dtype=object)
        return pd.DataFrame({
            "step": np.repeat(steps, len(keys)), "layer": np.tile(keys[:, 0], len(steps)),
            "tensor": np.tile(keys[:, 1], len(steps)), "kind": np.tile(keys[:, 2], len(steps)),
            "edges": list(edges), "counts": list(counts)})

    def final_frames(self, flat: torch.Tensor, steps: list[int]) -> list[pd.DataFrame]:
        """Weight statistics of the final weights ``flat`` (M, P), each model at its own last step."""
        if not (self.slots and self.weight_plain):
            return [_frame(np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 4), dtype=object))
                    for _ in steps]
        values = self._params(self._weight, flat).cpu().numpy()  # (M, S)
        return [_frame(np.array([s]), values[m][self._final[m][1]][None], self._final[m][0])
                for m, s in enumerate(steps)]


__all__ = ["Recorder"]

"""What the probe would record for each member of an ensemble, computed for all members at once.

The rows (step, layer, tensor, kind, stat) and their order are the single-model Probe's for the
same RecordConfig: per recorded step, module outputs in forward order, deltas in backward order,
gradients, weights and update ratios; histograms of gradient then weight per parameter; the
final weights last. A recorded step stacks raw reductions (``ensemble_stats``) into one row on the
device; a chunk of rows moves to the host at once, where NumPy turns it into statistics.
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
from gradprobe.schedules import Schedule
from gradprobe.train import setup
from gradprobe.train.config import RecordConfig
from gradprobe.train.ensemble_net import BatchedMLP, Pass
from gradprobe.train.ensemble_stats import (
    L2,
    batched_histogram,
    dead_fraction,
    finalize,
    moments_for,
    negative_fraction,
    row_moments,
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
    """Values of one kind for some tensors: ``len(names) * len(stats)`` columns; each model keeps some stats.

    Its raw columns are, per tensor, ``moments_for(stats)`` and then one column per stat without
    moments (dead_frac, saturated_frac). ``units`` are the entries of each tensor, or with
    ``per_example`` the entries per example of a module output (B, units).
    """

    kind: str
    names: list[tuple[str, str]]
    stats: tuple[str, ...]
    keep: list[tuple[str, ...]]  # per model
    units: tuple[int, ...]
    shape_sums: tuple[int, ...] = ()  # sum(shape) per tensor (per_example: B + units)
    per_example: bool = False

    @property
    def raw_width(self) -> int:
        """Raw columns of the segment: per tensor its moments and its stats without moments."""
        return len(self.names) * (len(moments_for(self.stats)) + sum(not moments_for((s,)) for s in self.stats))

    def finalize(self, raw: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """Stats ``(R, M, tensors * stats)`` from raw ``(R, M, tensors * k)`` of steps with ``batch`` (R,) examples."""
        r, m = raw.shape[:2]
        raw = raw.reshape(r, m, len(self.names), -1)
        units = np.asarray(self.units, dtype=np.float64)
        if self.per_example:
            n, shape_sum = batch[:, None, None] * units, batch[:, None, None] + units
        else:
            n, shape_sum = units, np.asarray(self.shape_sums, dtype=np.float64)
        return finalize(raw, moments_for(self.stats), n, shape_sum, self.stats).reshape(r, m, -1)


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
        every: the record schedule (step -> bool); hist_every: the histogram schedule.
    """

    def __init__(self, record: RecordConfig, models: list[MLP], net: BatchedMLP, every: Schedule,
                 hist_every: Schedule) -> None:
        self.net, self.every, self.hist_every = net, every, hist_every
        self.options = opts = setup.probe_options(record)
        self.bins = opts.bins
        m = len(models)
        chosen = set(_select([s.name for s in net.slots], record.params, "params"))
        self.slots = [s for s in net.slots if s.name in chosen]
        leaves = [n for n, mod in models[0].named_modules() if not list(mod.children())]
        self.modules = [] if record.modules is not None and not record.modules else _select(
            leaves, record.modules, "modules")
        act_q = ActivationStats(opts.activation_stats, opts.saturation_tol)
        fams = {n: [family_of(mod.get_submodule(n)) for mod in models] for n in self.modules}
        plain = act_q.stats_for(Inputs(torch.zeros(()), family=None))
        units = {n: net.slots[2 * (int(n.rpartition(".")[2]) // 2)].shape[0] for n in self.modules}
        self._act: list[_Segment] = []
        for name in self.modules:
            keep = [act_q.stats_for(Inputs(torch.zeros(()), family=f)) for f in fams[name]]
            extra = tuple(s for s in act_q.extras if any(s in k for k in keep))
            self._act.append(_Segment(R.ACTIVATION, [(name, "output")], plain + extra, keep, (units[name],),
                                      per_example=True))
        self._fams = [fams[n] for n in self.modules]
        bounds = [[f.bounds if isinstance(f, Family) and f.bounds else None for f in fams[n]] for n in self.modules]
        self._low, self._high = self._thresholds(bounds)
        self._delta = [_Segment(R.DELTA, [(n, "output")], opts.delta_stats, [opts.delta_stats] * m, (units[n],),
                                per_example=True) for n in reversed(self.modules)]
        pnames = [(s.name.rpartition(".")[0], s.name.rpartition(".")[2]) for s in self.slots]
        sizes, sums = tuple(s.stop - s.start for s in self.slots), tuple(sum(s.shape) for s in self.slots)
        self.weight_plain = tuple(s for s in opts.weight_stats if s != R.UPDATE_RATIO)
        self._grad = _Segment(R.GRAD, pnames, opts.grad_stats, [opts.grad_stats] * m, sizes, sums)
        self._weight = _Segment(R.WEIGHT, pnames, self.weight_plain, [self.weight_plain] * m, sizes, sums)
        self.ratio = R.UPDATE_RATIO in opts.weight_stats and bool(self.slots)
        self._ratio = _Segment(R.WEIGHT, pnames, (R.UPDATE_RATIO,), [(R.UPDATE_RATIO,)] * m, sizes, sums)
        self._layout = [s for s in self._act + self._delta + [self._grad, self._weight] + [self._ratio] * self.ratio
                        if s.names and s.stats]
        self._full = [_template(self._layout, i) for i in range(m)]
        self._final = [_template([s for s in [self._weight] if s.names and s.stats], i) for i in range(m)]
        self._hist_keys = [(layer, tensor, kind) for layer, tensor in pnames for kind in (R.GRAD, R.WEIGHT)]
        # flat and its grad are updated in place, so row views (M, n) of them stay valid
        self._weights, self._grads = self._rows_of(net.flat), self._rows_of(net.grad)
        self._snapshot = net.flat.detach().clone() if self.ratio else None
        self._before = self._rows_of(self._snapshot) if self._snapshot is not None else []
        self._rows: list[tuple[int, int, torch.Tensor]] = []  # (step, batch, raw (M, S)) still on the device
        self._hists: list[tuple[int, torch.Tensor]] = []  # (step, (M, 2 * params, bins + 3))
        self._pending: list[torch.Tensor] = []
        self._batch = 0

    @property
    def row_width(self) -> int:
        """Raw values per model in one recorded step."""
        return sum(seg.raw_width for seg in self._layout)

    def _rows_of(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[:, s.start:s.stop] for s in self.slots]  # (M, n) each

    def _thresholds(self, bounds: list[list[tuple[float, float] | None]]) -> tuple[torch.Tensor, torch.Tensor]:
        tol = self.options.saturation_tol
        low = [[b[0] + tol * (b[1] - b[0]) if b else -np.inf for b in row] for row in bounds]
        high = [[b[1] - tol * (b[1] - b[0]) if b else np.inf for b in row] for row in bounds]
        shape = (len(bounds), self.net.size)
        device = self.net.flat.device
        return (torch.tensor(low, dtype=torch.float32, device=device).reshape(shape),
                torch.tensor(high, dtype=torch.float32, device=device).reshape(shape))

    def _module_outputs(self, p: Pass) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Inputs (activations': the Linear output before them; a Linear's is not used), outputs, deltas."""
        ins, outs, deltas = [], [], []
        for name in self.modules:
            j = int(name.rpartition(".")[2])
            ins.append(p.zs[j // 2])
            outs.append((p.zs if j % 2 == 0 else p.hs)[j // 2])
            deltas.append((p.dzs if j % 2 == 0 else p.dhs)[j // 2])
        return ins, outs, deltas

    def _activation(self, i: int, seg: _Segment, source: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Raw columns (M, k) of module output ``i``: its moments, then dead/saturated/negative fractions."""
        moments = moments_for(seg.stats)
        cols = [row_moments([out.reshape(out.shape[0], -1)], moments)[:, 0]] if moments else []
        if R.DEAD_FRAC in seg.stats:
            cols.append(dead_fraction(source, out, self._fams[i]).unsqueeze(1))
        if R.SATURATED_FRAC in seg.stats:
            cols.append(saturated_fraction(out, self._low[i], self._high[i]).unsqueeze(1))
        if R.NEGATIVE_FRAC in seg.stats:
            cols.append(negative_fraction(source).unsqueeze(1))
        return torch.cat(cols, dim=1)

    def before_step(self, p: Pass) -> None:
        """Raw activation, delta, gradient and weight reductions of this step (weights before the update)."""
        parts: list[torch.Tensor] = []
        if self.modules:
            ins, outs, deltas = self._module_outputs(p)
            parts += [self._activation(i, seg, src, out)
                      for i, (seg, src, out) in enumerate(zip(self._act, ins, outs)) if seg.stats]
            parts += [row_moments([d.reshape(d.shape[0], -1)], moments_for(seg.stats))[:, 0]
                      for seg, d in zip(self._delta, reversed(deltas)) if seg.stats]
        if self.slots and self._grad.stats:
            parts.append(row_moments(self._grads, moments_for(self._grad.stats)).flatten(1))
        if self.slots and self.weight_plain:
            parts.append(row_moments(self._weights, moments_for(self.weight_plain)).flatten(1))
        if self._snapshot is not None:
            self._snapshot.copy_(self.net.flat)
        self._pending, self._batch = parts, p.zs[0].shape[1]

    def after_step(self, step: int) -> None:
        """Close the step's record with the update ratios of the update just taken."""
        parts = self._pending
        if self._snapshot is not None:
            base = row_moments(self._before, (L2,))
            self._snapshot.sub_(self.net.flat)  # before - after
            diff = row_moments(self._before, (L2,))
            parts = parts + [torch.cat([base, diff], dim=2).flatten(1)]  # (M, params * [L2, DIFF])
        if parts:
            self._rows.append((step, self._batch, torch.cat(parts, dim=1)))
        self._pending = []

    def hists(self, step: int) -> None:
        """Histograms of every recorded parameter's gradient and weight at ``step``."""
        if not self.slots:
            return
        packed = [batched_histogram(v, self.bins) for pair in zip(self._grads, self._weights) for v in pair]
        self._hists.append((step, torch.stack(packed, dim=1)))

    def _values(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Steps (R,) and statistics (R, M, S) of the buffered rows, in the layout of ``_template``."""
        steps = np.array([s for s, _, _ in self._rows], dtype=np.int64)
        if not self._rows:
            return steps, None
        raw = torch.stack([v for _, _, v in self._rows]).cpu().double().numpy()  # (R, M, raw columns)
        batch = np.array([b for _, b, _ in self._rows], dtype=np.float64)
        out, at = [], 0
        for seg in self._layout:
            out.append(seg.finalize(raw[:, :, at:at + seg.raw_width], batch))
            at += seg.raw_width
        return steps, np.concatenate(out, axis=2)

    def frames(self, last: list[int]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """Move what is buffered to the host and split it per model, keeping steps <= ``last[m]``."""
        out = []
        steps, values = self._values()
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
        raw = row_moments(self._rows_of(flat), moments_for(self.weight_plain)).cpu().double().numpy()
        values = self._weight.finalize(raw.reshape(1, raw.shape[0], -1), np.ones(1))[0]  # (M, S)
        return [_frame(np.array([s]), values[m][self._final[m][1]][None], self._final[m][0])
                for m, s in enumerate(steps)]


__all__ = ["Recorder"]

"""What the probe would record for each member of an ensemble, computed for all members at once.

The statistics are the probe's own quantities (``gradprobe.quantities``) reduced along their
member axis: the same raw reductions per member on the device and the same ``Quantity.finalize``
on the host. The rows (step, layer, tensor, kind, stat) and their order are the single-model
Probe's for the same RecordConfig: per recorded step, module outputs in forward order, deltas in
backward order, gradients, weights and update ratios; histograms of gradient then weight per
parameter; the final weights last. A recorded step stacks its raw rows into one ``(M, S)`` tensor
on the device; a chunk of steps moves to the host at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.models.mlp import MLP
from gradprobe.probe_options import select, split_name
from gradprobe.quantities import ActivationStats, Family, Inputs, Quantity, TensorStats, UpdateRatio, family_of
from gradprobe.quantities.histograms import histogram, unpack_histograms
from gradprobe.quantities.update_ratio import update_norms
from gradprobe.schedules import Schedule
from gradprobe.train import setup
from gradprobe.train.config import RecordConfig
from gradprobe.train.ensemble_net import BatchedMLP, Pass


def _shaped(*shape: int) -> Inputs:
    """Inputs of a tensor of ``shape`` for ``Quantity.meta`` (which reads only shapes: no memory)."""
    return Inputs(torch.empty(shape, device="meta"))


@dataclass(frozen=True)
class _Segment:
    """One quantity's rows in a recorded step: ``len(names)`` tensors per member, ``width`` raw columns each.

    ``stats`` are what its rows finalise to (for activations, the union over members); ``keep``
    what each member records of them; ``meta(batch)`` the ``(len(names), m)`` meta rows of a step.
    """

    quantity: Quantity
    names: list[tuple[str, str]]
    stats: tuple[str, ...]
    keep: list[tuple[str, ...]]  # per member
    width: int
    meta: Callable[[int], np.ndarray]

    @property
    def raw_width(self) -> int:
        """Raw columns per member in one recorded step."""
        return len(self.names) * self.width

    def finalize(self, raw: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """Stats ``(R, M, tensors * stats)`` from raw ``(R, M, tensors * width)`` of steps with ``batch`` (R,)."""
        r, m = raw.shape[:2]
        sizes, which = np.unique(batch, return_inverse=True)
        metas = np.stack([np.tile(self.meta(int(b)), (m, 1)) for b in sizes])  # (sizes, M * tensors, m)
        meta = metas[which].reshape(r * m * len(self.names), -1)  # member-major within each step
        values = self.quantity.finalize(raw.reshape(-1, self.width), meta, self.stats)
        return values.reshape(r, m, -1)


def _template(segments: list[_Segment], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Member ``m``'s rows ``(layer, tensor, kind, stat)`` (n, 4) and their columns (n,) in the values."""
    keys, cols, base = [], [], 0
    for seg in segments:
        for i, (layer, tensor) in enumerate(seg.names):
            for stat in seg.keep[m]:
                keys.append((layer, tensor, seg.quantity.kind, stat))
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
    """Computes, buffers and hands out per-member stats and histogram frames of a group.

    Args:
        record: the group's record section.
        models: the members' MLPs (for parameter/module names and activation families).
        net: the batched network whose flat parameters are recorded.
        every: the record schedule (step -> bool); hist_every: the histogram schedule.
    """

    def __init__(self, record: RecordConfig, models: list[MLP], net: BatchedMLP, every: Schedule,
                 hist_every: Schedule) -> None:
        self.net, self.every, self.hist_every = net, every, hist_every
        opts = setup.probe_options(record)
        self.bins, self.size = opts.bins, len(models)
        chosen = set(select([s.name for s in net.slots], record.params, "params"))
        self.slots = [s for s in net.slots if s.name in chosen]
        leaves = [n for n, mod in models[0].named_modules() if not list(mod.children())]
        self.modules = [] if record.modules is not None and not record.modules else select(
            leaves, record.modules, "modules")
        self._fams = [[family_of(mod.get_submodule(n)) for mod in models] for n in self.modules]
        self._act_q = ActivationStats(opts.activation_stats, opts.saturation_tol)
        self._delta_q = TensorStats(R.DELTA, opts.delta_stats)
        units = [net.slots[2 * (int(n.rpartition(".")[2]) // 2)].shape[0] for n in self.modules]
        self._act = [self._output_segment(self._act_q, n, u, fams)
                     for n, u, fams in zip(self.modules, units, self._fams)]
        self._delta = [self._output_segment(self._delta_q, n, u, None)
                       for n, u in zip(reversed(self.modules), reversed(units))]
        names = [split_name(s.name) for s in self.slots]
        self._grad_q = TensorStats(R.GRAD, opts.grad_stats)
        self._weight_q = TensorStats(R.WEIGHT, tuple(s for s in opts.weight_stats if s != R.UPDATE_RATIO))
        self._grad, self._weight = (self._param_segment(q, names) for q in (self._grad_q, self._weight_q))
        ratio = [_Segment(UpdateRatio((R.UPDATE_RATIO,)), names, (R.UPDATE_RATIO,), [(R.UPDATE_RATIO,)] * self.size,
                          2, lambda b: np.zeros((len(names), 0)))] if R.UPDATE_RATIO in opts.weight_stats else []
        self._layout = [s for s in self._act + self._delta + [self._grad, self._weight] + ratio if s.names and s.stats]
        self._full = [_template(self._layout, i) for i in range(self.size)]
        finals = [self._weight] if self._weight.names and self._weight.stats else []
        self._final = [_template(finals, i) for i in range(self.size)]
        self._hist_keys = [(layer, tensor, kind) for layer, tensor in names for kind in (R.GRAD, R.WEIGHT)]
        # flat and its grad are updated in place, so row views (M, n) of them stay valid
        self._weights, self._grads = self._rows_of(net.flat), self._rows_of(net.grad)
        self._snapshot = net.flat.detach().clone() if ratio and self.slots else None
        self._before = self._rows_of(self._snapshot) if self._snapshot is not None else []
        self._rows: list[tuple[int, int, torch.Tensor]] = []  # (step, batch, raw (M, S)) still on the device
        self._hists: list[tuple[int, torch.Tensor]] = []  # (step, (M, 2 * params, bins + 3))
        self._pending: list[torch.Tensor] = []
        self._batch = 0

    def _output_segment(self, q: ActivationStats | TensorStats, name: str, units: int,
                        fams: list[Family | None] | None) -> _Segment:
        """A module output's activation (with member ``fams``) or delta segment; its tensors are (M, B, units)."""
        if isinstance(q, ActivationStats) and fams is not None:
            keep, stats = [q.stats_for(Inputs(torch.zeros(()), family=f)) for f in fams], q.member_stats(fams)
            width = len(q.moments) + sum(s in q.extras for s in stats)  # moments, then a count per extra stat
        else:
            keep, stats, width = [q.stats] * self.size, q.stats, len(q.moments)
        return _Segment(q, [(name, "output")], stats, keep, width,
                        lambda b: np.array([q.meta(_shaped(b, units))], dtype=np.float64))

    def _param_segment(self, q: TensorStats, names: list[tuple[str, str]]) -> _Segment:
        meta = np.array([q.meta(_shaped(*s.shape)) for s in self.slots], dtype=np.float64).reshape(len(names), -1)
        return _Segment(q, names, q.stats, [q.stats] * self.size, len(q.moments), lambda b: meta)

    @property
    def row_width(self) -> int:
        """Raw values per member in one recorded step."""
        return sum(seg.raw_width for seg in self._layout)

    def _rows_of(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[:, s.start:s.stop] for s in self.slots]  # (M, n) each

    def _module_outputs(self, p: Pass) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Inputs (activations': the Linear output before them; a Linear's is not used), outputs, deltas."""
        ins, outs, deltas = [], [], []
        for name in self.modules:
            j = int(name.rpartition(".")[2])
            ins.append(p.zs[j // 2])
            outs.append((p.zs if j % 2 == 0 else p.hs)[j // 2])
            deltas.append((p.dzs if j % 2 == 0 else p.dhs)[j // 2])
        return ins, outs, deltas

    def _block(self, q: TensorStats, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Raw columns ``(M, tensors * k)`` of member blocks: a member's rows side by side."""
        return q.raw_block(tensors, members=self.size).view(self.size, -1)

    def before_step(self, p: Pass) -> None:
        """Raw activation, delta, gradient and weight reductions of this step (weights before the update)."""
        parts: list[torch.Tensor] = []
        if self.modules:
            ins, outs, deltas = self._module_outputs(p)
            parts += [self._act_q.raw_members(out, src, fams)
                      for seg, src, out, fams in zip(self._act, ins, outs, self._fams) if seg.stats]
            parts += [self._block(self._delta_q, [d]) for seg, d in zip(self._delta, reversed(deltas)) if seg.stats]
        if self.slots and self._grad_q.stats:
            parts.append(self._block(self._grad_q, self._grads))
        if self.slots and self._weight_q.stats:
            parts.append(self._block(self._weight_q, self._weights))
        if self._snapshot is not None:
            self._snapshot.copy_(self.net.flat)
        self._pending, self._batch = parts, p.zs[0].shape[1]

    def after_step(self, step: int) -> None:
        """Close the step's record with the update ratios of the update just taken."""
        parts = self._pending
        if self._snapshot is not None:
            ratio = update_norms(self._before, self._weights, members=self.size)  # (M * params, 2)
            parts = parts + [ratio.view(self.size, -1)]
        if parts:  # float64 where a row was redone to avoid overflow (cat promotes)
            self._rows.append((step, self._batch, torch.cat(parts, dim=1)))
        self._pending = []

    def hists(self, step: int) -> None:
        """Histograms of every recorded parameter's gradient and weight at ``step``."""
        if not self.slots:
            return
        packed = [histogram(v, self.bins, members=self.size) for pair in zip(self._grads, self._weights) for v in pair]
        self._hists.append((step, torch.stack(packed, dim=1)))

    def _values(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Steps (R,) and statistics (R, M, S) of the buffered rows, in the layout of ``_template``."""
        steps = np.array([s for s, _, _ in self._rows], dtype=np.int64)
        if not self._rows:
            return steps, None
        rows = [v for _, _, v in self._rows]
        if len({v.dtype for v in rows}) > 1:  # some step redone in float64 against overflow
            rows = [v.double() for v in rows]
        raw = torch.stack(rows).cpu().double().numpy()  # (R, M, raw columns)
        batch = np.array([b for _, b, _ in self._rows], dtype=np.int64)
        out, at = [], 0
        for seg in self._layout:
            out.append(seg.finalize(raw[:, :, at:at + seg.raw_width], batch))
            at += seg.raw_width
        return steps, np.concatenate(out, axis=2)

    def frames(self, last: list[int]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """Move what is buffered to the host and split it per member, keeping steps <= ``last[m]``."""
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
        edges, counts, _ = unpack_histograms(packed.reshape(-1, self.bins + 3), self.bins)
        keys = np.array(self._hist_keys, dtype=object)
        return pd.DataFrame({
            "step": np.repeat(steps, len(keys)), "layer": np.tile(keys[:, 0], len(steps)),
            "tensor": np.tile(keys[:, 1], len(steps)), "kind": np.tile(keys[:, 2], len(steps)),
            "edges": list(edges), "counts": list(counts)})

    def final_frames(self, flat: torch.Tensor, steps: list[int]) -> list[pd.DataFrame]:
        """Weight statistics of the final weights ``flat`` (M, P), each member at its own last step."""
        if not (self.slots and self._weight_q.stats):
            return [_frame(np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 4), dtype=object))
                    for _ in steps]
        raw = self._block(self._weight_q, self._rows_of(flat)).double().cpu().numpy()
        values = self._weight.finalize(raw[None], np.zeros(1, dtype=np.int64))[0]  # (M, S)
        return [_frame(np.array([s]), values[m][self._final[m][1]][None], self._final[m][0])
                for m, s in enumerate(steps)]


__all__ = ["Recorder"]

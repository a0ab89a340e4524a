"""Probe: attach to any ``nn.Module`` and record per-layer gradient, weight, activation and delta statistics.

Statistics are computed on the model's device when they are due and kept
there; ``flush`` moves everything buffered to the host in one transfer per
device, so recording never forces a host-device sync on every step.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.hooks import HookSet, first_tensor
from gradprobe.quantities import (
    ActivationStats,
    Inputs,
    Quantity,
    TensorStats,
    UpdateRatio,
    family_of,
    histogram,
    update_norms,
)
from gradprobe.quantities.histograms import unpack_histogram
from gradprobe.schedules import Schedule, as_schedule

log = logging.getLogger(__name__)
Sink = Callable[[pd.DataFrame, pd.DataFrame], None]


@dataclass(frozen=True)
class ProbeOptions:
    """What the probe records beyond its cadence; the defaults are cheap enough to leave on."""

    grad_stats: tuple[str, ...] = R.DEFAULT_GRAD_STATS
    weight_stats: tuple[str, ...] = R.DEFAULT_WEIGHT_STATS  # update_ratio needs a weight snapshot per step
    activation_stats: tuple[str, ...] = R.DEFAULT_ACTIVATION_STATS + (R.NONFINITE,)
    delta_stats: tuple[str, ...] = R.DEFAULT_DELTA_STATS + (R.NONFINITE,)
    bins: int = 30  # histogram bins; edges span each tensor's finite range
    saturation_tol: float = 0.01  # "saturated" = within this fraction of the range from an asymptote
    flush_every: int = 64  # recorded steps buffered on the device before one transfer to the host


@dataclass
class _Block:
    """Raw reductions of several tensors of one kind at one step, still on the device."""

    step: int
    quantity: Quantity
    names: list[tuple[str, str]]  # (layer, tensor) per row
    stats: tuple[str, ...]  # what the rows become once finalised on the host
    raw: torch.Tensor  # (len(names), k) raw reductions
    meta: list[tuple[float, ...]]  # per row: what finalising needs (element counts, shapes)


@dataclass
class _Buffer:
    blocks: list[_Block] = field(default_factory=list)
    hists: list[tuple[int, str, str, str, torch.Tensor]] = field(default_factory=list)
    steps: set[int] = field(default_factory=set)


def _split(name: str) -> tuple[str, str]:
    layer, _, tensor = name.rpartition(".")
    return layer, tensor


def _select(names: Sequence[str], patterns: str | Sequence[str] | None, what: str) -> list[str]:
    if patterns is None:
        return list(names)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not chosen:
        sample = ", ".join(list(names)[:6]) or "(none)"
        raise GradprobeError(f"{what}: {pats!r} matches nothing; available names include {sample}")
    return chosen


def first_nonfinite(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The first record (step, layer, tensor, kind) that counted NaN/Inf entries, or None.

    Only counted entries: a float32 mean of huge finite values may overflow, and a zero-initialised
    bias has an infinite update ratio, yet neither tensor holds a NaN or Inf.
    """
    bad = frame[(frame["stat"] == R.NONFINITE) & (frame["value"] > 0)]
    if not len(bad):
        return None
    first = bad.loc[bad["step"].idxmin()]
    log.warning("non-finite values first seen at step %d in %s.%s (%s)",
                first["step"], first["layer"], first["tensor"], first["kind"])
    return {"step": int(first["step"]), "layer": first["layer"], "tensor": first["tensor"], "kind": first["kind"]}


class Probe:
    """Records per-layer statistics of ``model`` while it trains; a context manager; ``detach()`` undoes it.

    Args:
        model: any ``nn.Module``; its behaviour is not changed.
        optimizer: read gradients at this optimizer's step time (after accumulation, unscaling and
            clipping) and measure the update it really took. If None, the probe follows every torch
            optimizer that holds the model's parameters; loops without one call :meth:`step`.
        every: record cadence in optimizer steps (an int or a schedule ``step -> bool``).
        hist_every: histogram cadence; None for no histograms.
        params: fnmatch patterns of parameter names to record (default: all trainable).
        modules: fnmatch patterns of module names whose outputs (activation, delta) are recorded
            (default: every leaf module); ``[]`` records none.
        options: stats, bins and buffering (:class:`ProbeOptions`).
        sink: called with ``(stats_frame, hist_frame)`` at every flush, e.g. a run store writer.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | Schedule = 1,
        hist_every: int | Schedule | None = None,
        params: str | Sequence[str] | None = None,
        modules: str | Sequence[str] | None = None,
        options: ProbeOptions | None = None,
        sink: Sink | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradprobeError(f"model: {type(model).__name__} is not a torch.nn.Module")
        self.model = model
        self.options = options or ProbeOptions()
        if self.options.bins < 1 or self.options.flush_every < 1:
            raise GradprobeError("options: bins and flush_every must be >= 1")
        self._schedule = as_schedule(every)
        self._hist_schedule = as_schedule(hist_every)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._params = [(n, named[n]) for n in _select(list(named), params, "params")]
        self._grad_q = TensorStats(R.GRAD, self.options.grad_stats)
        weight_plain = tuple(s for s in self.options.weight_stats if s != R.UPDATE_RATIO)
        self._weight_q = TensorStats(R.WEIGHT, weight_plain)
        self._ratio_q = UpdateRatio((R.UPDATE_RATIO,)) if R.UPDATE_RATIO in self.options.weight_stats else None
        self._act_q = ActivationStats(self.options.activation_stats, self.options.saturation_tol)
        self._delta_q = TensorStats(R.DELTA, self.options.delta_stats)
        if optimizer is not None and not self._owns(optimizer):
            raise GradprobeError("optimizer: it holds none of the model's parameters")
        self._explicit_optimizer = optimizer
        self._owned: dict[int, bool] = {}
        self._step = 0
        self._seen: set[str] = set()
        self._snapshot: list[torch.Tensor] | None = None
        self._snapshot_buffers: list[torch.Tensor] | None = None
        self._last_weights: list[torch.Tensor] | None = None  # for step(): ratio between recorded steps
        self._followed_optimizer = False
        self._buffer = _Buffer()
        self._frames: list[pd.DataFrame] = []
        self._hist_frames: list[pd.DataFrame] = []
        self._sink = sink
        self.first_nonfinite: dict[str, Any] | None = None
        self._hooks = HookSet()
        self._attach(model, modules)

    # -- attaching -------------------------------------------------------------------------------
    def _attach(self, model: nn.Module, modules: str | Sequence[str] | None) -> None:
        leaves = [n for n, m in model.named_modules() if not list(m.children())]
        chosen = [] if modules is not None and not modules else _select(leaves, modules, "modules")
        by_name = dict(model.named_modules())
        for name in chosen:
            self._hooks.forward(by_name[name], self._forward_hook(name, family_of(by_name[name])))
        self._hooks.optimizer(self._explicit_optimizer, self._pre_step, self._post_step)
        self._attached = True

    def detach(self) -> None:
        """Remove every hook and move what is buffered to the host; safe to call twice."""
        if getattr(self, "_attached", False):
            self._hooks.remove_all()
            self._attached = False
            self.flush()

    def __enter__(self) -> Probe:  # noqa: PYI034  (Probe is not meant to be subclassed)
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def step_count(self) -> int:
        """Number of optimizer steps seen so far (the step the next records belong to)."""
        return self._step

    # -- recording -------------------------------------------------------------------------------
    def _owns(self, optimizer: torch.optim.Optimizer) -> bool:
        ids = {id(p) for _, p in self._params}
        return any(id(p) in ids for g in optimizer.param_groups for p in g["params"])

    def _follows(self, optimizer: torch.optim.Optimizer) -> bool:
        key = id(optimizer)
        if key not in self._owned:
            self._owned[key] = self._explicit_optimizer is not None or self._owns(optimizer)
        return self._owned[key]

    def _push(self, step: int, quantity: Quantity, names: list[tuple[str, str]], stats: tuple[str, ...],
              raw: torch.Tensor, meta: list[tuple[float, ...]]) -> None:
        if names and stats:
            self._buffer.blocks.append(_Block(step, quantity, names, stats, raw, meta))
            self._buffer.steps.add(step)

    def resume_at(self, step: int) -> None:
        """Continue counting from ``step`` (a run restored from a checkpoint), so records keep their steps."""
        self._step = step

    def _record_tensors(self, step: int, quantity: TensorStats, values: list[tuple[str, torch.Tensor]]) -> None:
        if not values or not quantity.stats:
            return
        inputs = [Inputs(t) for _, t in values]
        raw = torch.stack([quantity.raw(i) for i in inputs])  # (len(values), k)
        self._push(step, quantity, [_split(n) for n, _ in values], quantity.stats, raw,
                   [quantity.meta(i) for i in inputs])

    def _record_params(self, step: int) -> None:
        grads = [(n, p.grad) for n, p in self._params if p.grad is not None]
        self._record_tensors(step, self._grad_q, grads)
        self._record_tensors(step, self._weight_q, [(n, p) for n, p in self._params])

    def _record_hists(self, step: int) -> None:
        for n, p in self._params:
            layer, tensor = _split(n)
            for kind, value in ((R.GRAD, p.grad), (R.WEIGHT, p)):
                if value is not None:
                    self._buffer.hists.append((step, layer, tensor, kind, histogram(value, self.options.bins)))

    def _record_ratio(self, step: int, before: list[torch.Tensor]) -> None:
        assert self._ratio_q is not None
        raw = update_norms(before, [p for _, p in self._params])  # (n_params, 2)
        self._push(step, self._ratio_q, [_split(n) for n, _ in self._params], (R.UPDATE_RATIO,), raw,
                   [()] * len(self._params))

    def _snapshot_weights(self, buffers: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Copy the weights into reusable buffers (allocated once) in one fused call."""
        params = [p.detach() for _, p in self._params]
        if buffers is None:
            return [p.clone() for p in params]
        torch._foreach_copy_(buffers, params)
        return buffers

    def _pre_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._follows(optimizer):
            return
        self._followed_optimizer = True
        step = self._step
        if self._schedule(step):
            self._record_params(step)
            if self._ratio_q is not None:
                self._snapshot = self._snapshot_weights(self._snapshot_buffers)
                self._snapshot_buffers = self._snapshot
        if self._hist_schedule(step):
            self._record_hists(step)

    def _post_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._follows(optimizer):
            return
        if self._snapshot is not None:
            self._record_ratio(self._step, self._snapshot)
            self._snapshot = None
        self._advance()

    def _advance(self) -> None:
        self._step += 1
        self._seen.clear()
        if len(self._buffer.steps) >= self.options.flush_every:
            self.flush()

    def step(self) -> None:
        """Record (if due) and advance one step, for loops that update weights without a torch optimizer.

        The update ratio is then measured between consecutive recorded steps.

        Raises:
            GradprobeError: if the probe already follows a torch optimizer's steps.
        """
        if self._followed_optimizer:
            raise GradprobeError("probe.step(): the probe already follows the optimizer's steps; don't call both")
        step = self._step
        if self._schedule(step):
            self._record_params(step)
            if self._ratio_q is not None:
                if self._last_weights is not None:
                    self._record_ratio(step, self._last_weights)
                self._last_weights = self._snapshot_weights(None)
        if self._hist_schedule(step):
            self._record_hists(step)
        self._advance()

    def record_weights(self) -> None:
        """Record weight statistics now, at the current step (e.g. the final weights after training)."""
        self._record_tensors(self._step, self._weight_q, [(n, p) for n, p in self._params])

    def _forward_hook(self, name: str, family: object) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in self._seen or not (torch.is_grad_enabled() and self.model.training):
                return
            step = self._step
            if not self._schedule(step):
                return
            out = first_tensor(output)
            if out is None or not out.is_floating_point() or out.numel() == 0:
                return
            self._seen.add(name)  # only the first forward of a step (gradient accumulation, RNN reuse)
            inputs_ = Inputs(out, family=family)
            self._push(step, self._act_q, [(name, "output")], self._act_q.stats_for(inputs_),
                       self._act_q.raw(inputs_)[None], [self._act_q.meta(inputs_)])
            if out.requires_grad and self._delta_q.stats:
                # A tensor hook, not a full backward hook: it survives in-place ops after this module.
                out.register_hook(lambda g: self._on_delta(step, name, g))

        return hook

    def _on_delta(self, step: int, name: str, grad: torch.Tensor) -> None:
        if self._attached:
            inputs = Inputs(grad)
            self._push(step, self._delta_q, [(name, "output")], self._delta_q.stats, self._delta_q.raw(inputs)[None],
                       [self._delta_q.meta(inputs)])

    def diagnose(self, thresholds: Any = None) -> Any:
        """The diagnosis of what was recorded so far (see :func:`gradprobe.diagnose.engine.diagnose`)."""
        from gradprobe.diagnose.engine import diagnose

        return diagnose(self, thresholds)

    # -- results ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Move everything buffered to the host (one transfer per device) and hand it to the sink."""
        blocks, hists = self._buffer.blocks, self._buffer.hists
        self._buffer = _Buffer()
        if not blocks and not hists:
            return
        stats = self._stats_frame(blocks)
        hist = self._hist_frame(hists)
        self._note_nonfinite(stats)
        self._frames.append(stats)
        self._hist_frames.append(hist)
        if self._sink is not None:
            self._sink(stats, hist)

    @staticmethod
    def _to_host(tensors: list[torch.Tensor]) -> np.ndarray:
        if not tensors:
            return np.zeros(0, dtype=np.float32)
        by_device: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            by_device.setdefault(t.device, []).append(i)
        flat = [t.reshape(-1) for t in tensors]
        host: list[np.ndarray | None] = [None] * len(tensors)
        for idx in by_device.values():
            joined = torch.cat([flat[i] for i in idx]).detach().cpu().numpy()
            offsets = np.cumsum([0] + [flat[i].numel() for i in idx])
            for j, i in enumerate(idx):
                host[i] = joined[offsets[j] : offsets[j + 1]]
        return np.concatenate(host)  # type: ignore[arg-type]

    @staticmethod
    def _finalize(blocks: list[_Block]) -> np.ndarray:
        """Host statistics of every block, in block order, finalised group by group with NumPy."""
        raw = Probe._to_host([b.raw.double() for b in blocks])
        offsets = np.cumsum([0] + [b.raw.numel() for b in blocks])
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, b in enumerate(blocks):
            groups.setdefault((id(b.quantity), b.stats), []).append(i)
        parts: list[np.ndarray] = [np.empty(0)] * len(blocks)
        for members in groups.values():
            first = blocks[members[0]]
            width = first.raw.shape[1]
            rows = np.concatenate([raw[offsets[i]:offsets[i + 1]] for i in members]).reshape(-1, width)
            meta = np.array([m for i in members for m in blocks[i].meta], dtype=np.float64).reshape(len(rows), -1)
            values = first.quantity.finalize(rows, meta, first.stats)  # (rows, len(stats))
            start = 0
            for i in members:
                n = len(blocks[i].names)
                parts[i] = values[start:start + n].reshape(-1)
                start += n
        return np.concatenate(parts) if parts else np.zeros(0)

    def _stats_frame(self, blocks: list[_Block]) -> pd.DataFrame:
        values = self._finalize(blocks)
        cols: dict[str, list[Any]] = {"step": [], "layer": [], "tensor": [], "kind": [], "stat": []}
        for b in blocks:
            n = len(b.names) * len(b.stats)
            cols["step"].extend([b.step] * n)
            cols["kind"].extend([b.quantity.kind] * n)
            for layer, tensor in b.names:
                cols["layer"].extend([layer] * len(b.stats))
                cols["tensor"].extend([tensor] * len(b.stats))
                cols["stat"].extend(b.stats)
        frame = pd.DataFrame(cols)
        frame["value"] = values.astype(np.float64)
        return frame[list(R.STAT_COLUMNS)]

    def _hist_frame(self, hists: list[tuple[int, str, str, str, torch.Tensor]]) -> pd.DataFrame:
        packed = self._to_host([h[4] for h in hists]).reshape(len(hists), self.options.bins + 3)
        rows = []
        for (step, layer, tensor, kind, _), vec in zip(hists, packed):
            edges, counts, _nonfinite = unpack_histogram(vec, self.options.bins)
            rows.append((step, layer, tensor, kind, edges, counts))
        return pd.DataFrame(rows, columns=list(R.HIST_COLUMNS))

    def _note_nonfinite(self, frame: pd.DataFrame) -> None:
        if self.first_nonfinite is None:
            self.first_nonfinite = first_nonfinite(frame)

    def frame(self) -> pd.DataFrame:
        """All statistics recorded so far as a tidy frame with columns :data:`records.STAT_COLUMNS`."""
        self.flush()
        if not self._frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(R.STAT_COLUMNS, (
                "int64", "object", "object", "object", "object", "float64"))})
        return pd.concat(self._frames, ignore_index=True)

    def hists(self) -> pd.DataFrame:
        """All histograms recorded so far, columns :data:`records.HIST_COLUMNS` (edges, counts as arrays)."""
        self.flush()
        if not self._hist_frames:
            return pd.DataFrame(columns=list(R.HIST_COLUMNS))
        return pd.concat(self._hist_frames, ignore_index=True)


__all__ = ["Probe", "ProbeOptions", "Sink"]

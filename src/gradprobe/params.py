"""The probe's parameters: gradient and weight statistics as one stacked block each, histograms, update ratios.

Under FSDP2 parameters and gradients are DTensors: each rank reduces its local shard, the rows
carry the global element count and shape, and flushes combine the shards (see :mod:`gradprobe.distributed`).
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe import records as R
from gradprobe.blocks import NORMS, SAME, SHARDS, Block
from gradprobe.distributed import local
from gradprobe.probe_options import ProbeOptions, split_name
from gradprobe.quantities import TensorStats, UpdateRatio, histogram, update_norms

Hist = tuple[int, str, str, str, torch.Tensor]  # (step, layer, tensor, kind, packed histogram)


class Params:
    """Blocks of statistics of the recorded parameters, built in a few batched calls per step.

    Args:
        params: ``(name, parameter)`` pairs, in model order.
        options: which grad and weight stats (``update_ratio`` among the weight stats adds a snapshot).
        sharded: the parameters are DTensor shards (FSDP2), to be combined across ranks at the flush.
    """

    def __init__(self, params: list[tuple[str, nn.Parameter]], options: ProbeOptions, sharded: bool = False) -> None:
        self.named = params
        self.sharded = sharded
        self._names = [split_name(n) for n, _ in params]
        self._grad_q = TensorStats(R.GRAD, options.grad_stats)
        self._weight_q = TensorStats(R.WEIGHT, tuple(s for s in options.weight_stats if s != R.UPDATE_RATIO))
        self.ratio_q = UpdateRatio((R.UPDATE_RATIO,)) if R.UPDATE_RATIO in options.weight_stats else None
        self._buffers: list[torch.Tensor] | None = None  # the snapshot's reusable copies

    def _block(self, step: int, quantity: TensorStats, values: list[tuple[int, torch.Tensor]]) -> list[Block]:
        if not values or not quantity.stats:
            return []
        tensors = [t for _, t in values]  # meta: global counts and shapes (a DTensor reports its global ones)
        shards = [local(t) for t in tensors]
        return [Block(step, quantity, [self._names[i] for i, _ in values], quantity.stats, _raw_block(quantity, shards),
                      [(float(t.numel()), float(sum(t.shape))) for t in tensors], SHARDS if self.sharded else SAME,
                      local=[float(t.numel()) for t in shards] if self.sharded else None)]

    def weights(self, step: int) -> list[Block]:
        """The weight-stats block (empty list if no weight stats)."""
        return self._block(step, self._weight_q, [(i, p) for i, (_, p) in enumerate(self.named)])

    def stats(self, step: int) -> list[Block]:
        """The gradient block (parameters with a gradient) and the weight block."""
        grads = [(i, p.grad) for i, (_, p) in enumerate(self.named) if p.grad is not None]
        return self._block(step, self._grad_q, grads) + self.weights(step)

    def hists(self, step: int, bins: int) -> list[Hist]:
        """Packed histograms of every gradient and weight."""
        return [(step, layer, tensor, kind, histogram(value, bins))
                for (layer, tensor), (_, p) in zip(self._names, self.named)
                for kind, value in ((R.GRAD, p.grad), (R.WEIGHT, p)) if value is not None]

    def ratio(self, step: int, before: list[torch.Tensor]) -> Block:
        """The update-ratio block between ``before`` (overwritten: scratch) and the weights now."""
        assert self.ratio_q is not None
        raw = update_norms(before, [local(p) for _, p in self.named])  # (n_params, 2), of this rank's shards
        return Block(step, self.ratio_q, self._names, (R.UPDATE_RATIO,), raw, [()] * len(self.named),
                     NORMS if self.sharded else SAME)

    def snapshot(self, reuse: bool) -> list[torch.Tensor]:
        """Copies of the weights; with ``reuse``, into buffers allocated once, in one fused call."""
        params = [local(p).detach() for _, p in self.named]
        if not reuse:
            return [p.clone() for p in params]
        if self._buffers is None:
            self._buffers = [p.clone() for p in params]
        else:
            torch._foreach_copy_(self._buffers, params)
        return self._buffers


def _raw_block(quantity: TensorStats, tensors: list[torch.Tensor]) -> torch.Tensor:
    """``quantity``'s raw rows of ``tensors``; zeros for empty ones (a rank's empty shard of a small parameter)."""
    full = [i for i, t in enumerate(tensors) if t.numel()]
    if len(full) == len(tensors):
        return quantity.raw_block(tensors)
    out = torch.zeros(len(tensors), len(quantity.moments), device=tensors[0].device, dtype=torch.float64)
    if full:
        out[full] = quantity.raw_block([tensors[i] for i in full]).to(out.dtype)
    return out


__all__ = ["Hist", "Params"]

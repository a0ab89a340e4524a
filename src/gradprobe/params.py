"""The probe's parameters: gradient and weight statistics as one stacked block each, histograms, update ratios."""

from __future__ import annotations

import torch
from torch import nn

from gradprobe import records as R
from gradprobe.blocks import Block
from gradprobe.probe_options import ProbeOptions, split_name
from gradprobe.quantities import TensorStats, UpdateRatio, histogram, update_norms

Hist = tuple[int, str, str, str, torch.Tensor]  # (step, layer, tensor, kind, packed histogram)


class Params:
    """Blocks of statistics of the recorded parameters, built in a few batched calls per step.

    Args:
        params: ``(name, parameter)`` pairs, in model order.
        options: which grad and weight stats (``update_ratio`` among the weight stats adds a snapshot).
    """

    def __init__(self, params: list[tuple[str, nn.Parameter]], options: ProbeOptions) -> None:
        self.named = params
        self._names = [split_name(n) for n, _ in params]
        self._grad_q = TensorStats(R.GRAD, options.grad_stats)
        self._weight_q = TensorStats(R.WEIGHT, tuple(s for s in options.weight_stats if s != R.UPDATE_RATIO))
        self.ratio_q = UpdateRatio((R.UPDATE_RATIO,)) if R.UPDATE_RATIO in options.weight_stats else None
        self._buffers: list[torch.Tensor] | None = None  # the snapshot's reusable copies

    def _block(self, step: int, quantity: TensorStats, values: list[tuple[int, torch.Tensor]]) -> list[Block]:
        if not values or not quantity.stats:
            return []
        tensors = [t for _, t in values]
        return [Block(step, quantity, [self._names[i] for i, _ in values], quantity.stats,
                      quantity.raw_block(tensors), [(float(t.numel()), float(sum(t.shape))) for t in tensors])]

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
        raw = update_norms(before, [p for _, p in self.named])  # (n_params, 2)
        return Block(step, self.ratio_q, self._names, (R.UPDATE_RATIO,), raw, [()] * len(self.named))

    def snapshot(self, reuse: bool) -> list[torch.Tensor]:
        """Copies of the weights; with ``reuse``, into buffers allocated once, in one fused call."""
        params = [p.detach() for _, p in self.named]
        if not reuse:
            return [p.clone() for p in params]
        if self._buffers is None:
            self._buffers = [p.clone() for p in params]
        else:
            torch._foreach_copy_(self._buffers, params)
        return self._buffers


__all__ = ["Hist", "Params"]

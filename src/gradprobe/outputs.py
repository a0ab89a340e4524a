"""Module outputs of the probe: forward hooks that reduce activations, tensor hooks for deltas, pooled at the step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradprobe.budget import Cadence
from gradprobe.hooks import first_tensor
from gradprobe.pending import Call, Pending, Row
from gradprobe.quantities import ActivationStats, Inputs, Quantity, TensorStats


class Outputs:
    """Activation and delta statistics of the recorded modules' outputs (see :mod:`gradprobe.pending`).

    Args:
        act_q: activation statistics.
        delta_q: delta (dL/d output) statistics.
        cadence: whether the current step records (``due``), and where hook time is accounted.
        current: the probe's current step and whether it is still attached.
    """

    def __init__(self, act_q: ActivationStats, delta_q: TensorStats, cadence: Cadence,
                 current: Callable[[], tuple[int, bool]]) -> None:
        self.act_q, self.delta_q, self._cadence, self._current = act_q, delta_q, cadence, current
        self.pending = Pending(act_q, delta_q)

    def hook(self, name: str, family: object) -> Callable[[nn.Module, Any, Any], None]:
        """The forward hook of module ``name`` (activation ``family``, see activation_stats)."""
        def forward(module: nn.Module, inputs: Any, output: Any) -> None:
            # Any mode (eval() with frozen BatchNorm trains too); passes without grad are not training.
            if not torch.is_grad_enabled() or not self._cadence.due(self._current()[0]):
                return
            out = first_tensor(output)
            if out is None or not out.is_floating_point() or out.numel() == 0 or not out.requires_grad:
                return  # no gradient can reach this output, so no optimizer step uses this pass
            since = self._cadence.clock()
            data = Inputs(out, family=family, source=first_tensor(inputs))
            call = Call(name, self.act_q.stats_for(data), self.act_q.raw(data), self.act_q.meta(data),
                        out.shape[0] if out.dim() > 1 else 1, self.act_q.dead_mask(data))
            self.pending.add(call)
            # A tensor hook, not a full backward hook: it survives in-place ops after this module.
            out.register_hook(lambda g: self._delta(call, g))
            self._cadence.spend(since)

        return forward

    def _delta(self, call: Call, grad: torch.Tensor) -> None:
        if self._current()[1]:
            since = self._cadence.clock()
            self.pending.on_delta(call, grad)
            self._cadence.spend(since)

    def commit(self, scale: torch.Tensor | None) -> list[tuple[Quantity, Row]]:
        """The step's pooled rows, activations (forward order) then deltas (backward order)."""
        acts, deltas = self.pending.commit(scale)
        return [(self.act_q, r) for r in acts] + [(self.delta_q, r) for r in deltas]


__all__ = ["Outputs"]

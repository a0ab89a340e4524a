"""Module outputs of the probe: forward hooks that reduce activations, tensor hooks for deltas, pooled at the step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradprobe.budget import Cadence
from gradprobe.hooks import DeltaTap, first_tensor
from gradprobe.pending import Call, Pending, Row
from gradprobe.quantities import ActivationStats, Inputs, Quantity, TensorStats
from gradprobe.units import unit_masks


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
        # Compiled forwards read only this flag (dynamo guards on it: one graph recording, one not,
        # instead of a recompile per step number) and write deltas into preallocated tap buffers.
        self.recording = False
        self._taps: dict[str, list[torch.Tensor]] = {}
        self.unit_dim: int | None = None  # per-unit masks along this dim (gradprobe.units); None: not tracked

    def advance(self) -> None:
        """A new step begins: drop the held calls and decide whether compiled forwards record."""
        stale = [c.tap for c in self.pending.calls if c.tap is not None]  # e.g. a step the GradScaler skipped
        if stale:
            torch._foreach_zero_(stale)
        self.pending.clear()
        step, attached = self._current()
        self.recording = attached and self._cadence.due(step)

    def hook(self, name: str, family: object, module: nn.Module | None = None) -> Callable[[nn.Module, Any, Any], Any]:
        """The forward hook of module ``name`` (activation ``family``, see activation_stats).

        ``module`` gives the device of the delta tap buffer used inside ``torch.compile`` graphs.
        """
        tensors = [*module.parameters(), *module.buffers()] if module is not None else []
        device = tensors[0].device if tensors else torch.device("cpu")
        self._taps[name] = [self._tap_buffer(device)]

        def forward(module: nn.Module, inputs: Any, output: Any) -> Any:
            if torch.compiler.is_compiling():
                return self._traced(name, family, inputs, output)
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
            if self.unit_dim is not None:
                call.units = unit_masks(family, data.source, out, self.act_q.saturation_tol, self.unit_dim, call.dead)
            self.pending.add(call)
            # A tensor hook, not a full backward hook: it survives in-place ops after this module.
            out.register_hook(lambda g: self._delta(call, g))
            self._cadence.spend(since)

        return forward

    def _tap_buffer(self, device: torch.device) -> torch.Tensor:
        acc = torch.float32 if device.type == "mps" else torch.float64
        return torch.zeros(len(self.delta_q.moments) + 1, dtype=acc, device=device)  # (k + 1,)

    def _traced(self, name: str, family: object, inputs: Any, output: Any) -> Any:
        """The forward hook as dynamo traces it: reductions in the graph, the delta through a :class:`DeltaTap`."""
        out = first_tensor(output)
        if (not self.recording or not torch.is_grad_enabled() or out is None or not out.is_floating_point()
                or out.numel() == 0 or not out.requires_grad):
            return None
        data = Inputs(out, family=family, source=first_tensor(inputs))
        index = sum(1 for c in self.pending.calls if c.name == name)  # this module's call number in the step
        taps = self._taps[name]
        tap = taps[index] if index < len(taps) and isinstance(output, torch.Tensor) and self.delta_q.stats else None
        call = Call(name, self.act_q.stats_for(data), self.act_q.raw(data), self.act_q.meta(data),
                    out.shape[0] if out.dim() > 1 else 1, self.act_q.dead_mask(data), tap=tap, traced=True)
        if self.unit_dim is not None:
            call.units = unit_masks(family, data.source, out, self.act_q.saturation_tol, self.unit_dim, call.dead)
        self.pending.add(call)
        if tap is None:
            return None
        call.delta_meta = self.delta_q.meta(data)
        return DeltaTap.apply(output, tap, self._reduce_delta)

    def _reduce_delta(self, grad: torch.Tensor) -> torch.Tensor:
        return self.delta_q.raw(Inputs(grad))

    def _delta(self, call: Call, grad: torch.Tensor) -> None:
        if self._current()[1]:
            since = self._cadence.clock()
            self.pending.on_delta(call, grad)
            self._cadence.spend(since)

    def commit(self, scale: torch.Tensor | None) -> list[tuple[Quantity, Row]]:
        """The step's pooled rows, activations (forward order) then deltas (backward order)."""
        for name, calls in self.pending.read_taps().items():  # grow the pools for the next compiled steps
            taps = self._taps.setdefault(name, [])
            taps += [self._tap_buffer(taps[0].device if taps else torch.device("cpu"))
                     for _ in range(calls - len(taps))]
        acts, deltas = self.pending.commit(scale)
        return [(self.act_q, r) for r in acts] + [(self.delta_q, r) for r in deltas]


__all__ = ["Outputs"]

"""Second-order signals on a probe's cadences: sharpness (top Hessian eigenvalue) and per-parameter gradient SNR.

The numbers come from :mod:`gradprobe.quantities.curvature` and :mod:`gradprobe.quantities.noise`; this
module decides when they are due and turns them into the probe's stats rows:

* kind ``curvature``, layer ``""``, tensor ``hessian``: ``top_hessian_eig`` (signed, the eigenvalue of
  largest magnitude of the loss's Hessian over every trainable parameter) and ``power_iters``.
* kind ``snr``, layer and tensor of each recorded parameter: ``grad_snr`` (||mean g_i||^2 over the mean
  squared deviation of the per-example gradients ``g_i``, on the first ``snr_examples`` of the batch).

Both run extra forward/backward passes with the model's forward hooks suspended (the probe's activation
and delta records see only the training pass) and leave ``.grad`` untouched. Each is dear (see the
functions' docstrings: ~1 + 2 x iterations backward passes, ~60x a step at 128 examples): off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradprobe import records as R
from gradprobe.blocks import Block
from gradprobe.errors import GradprobeError
from gradprobe.nan_guard import suspended_forward_hooks
from gradprobe.probe_options import split_name
from gradprobe.quantities.curvature import LossFn, top_hessian_eigenvalue
from gradprobe.quantities.noise import gradient_snr
from gradprobe.quantities.step_stats import StepStats
from gradprobe.schedules import Schedule, as_schedule


class HostValues(StepStats):
    """Numbers already computed (on the host), carried through the probe's records as they are."""

    def __init__(self, kind: str, stats: tuple[str, ...]) -> None:
        self.kind, self.available = kind, stats
        super().__init__(stats)


class SecondOrder:
    """When sharpness and gradient SNR are due, and their computation into :class:`Block` rows.

    Args:
        sharpness_every: cadence (int, schedule or None for never) of the top Hessian eigenvalue.
        snr_every: cadence of the per-parameter gradient SNR.
        params: ``(name, parameter)`` pairs whose SNR is recorded (the probe's selection).
        iters: at most this many Hessian-vector products per sharpness estimate.
        tol: relative change of the estimate that stops the power iteration.
        snr_examples: the SNR uses the first this many examples of the batch (>= 2).
    """

    def __init__(self, sharpness_every: int | Schedule | None, snr_every: int | Schedule | None,
                 params: Sequence[tuple[str, torch.Tensor]], iters: int = 20, tol: float = 1e-3,
                 snr_examples: int = 32) -> None:
        if isinstance(snr_examples, bool) or not isinstance(snr_examples, int) or snr_examples < 2:
            raise GradprobeError(f"snr_examples: {snr_examples!r}; allowed: an int >= 2")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise GradprobeError(f"sharpness_iters: {iters!r}; allowed: an int >= 1")
        if not tol >= 0:
            raise GradprobeError(f"sharpness_tol: {tol!r}; allowed: a number >= 0")
        self.sharpness_due, self.snr_due = as_schedule(sharpness_every), as_schedule(snr_every)
        self.params, self.iters, self.tol, self.snr_examples = params, iters, tol, snr_examples
        self._curvature_q = HostValues(R.CURVATURE, (R.TOP_HESSIAN_EIG, R.POWER_ITERS))
        self._snr_q = HostValues(R.SNR, (R.GRAD_SNR,))

    def due(self, step: int) -> bool:
        """Whether anything is due at ``step``."""
        return self.sharpness_due(step) or self.snr_due(step)

    def blocks(self, step: int, model: nn.Module, loss_fn: LossFn,
               batch: tuple[torch.Tensor, torch.Tensor]) -> list[Block]:
        """What is due at ``step``, computed on ``batch`` at the model's current weights."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise GradprobeError(f"batch: a {type(batch).__name__}; allowed: a pair (x, y) of tensors")
        x, y = batch
        out: list[Block] = []
        with suspended_forward_hooks(model):
            if self.sharpness_due(step):
                device = next(model.parameters()).device
                gen = torch.Generator(device=device).manual_seed(step)  # reproducible start vector per step
                eig, its = top_hessian_eigenvalue(model, loss_fn, (x, y), self.iters, self.tol, generator=gen)
                out.append(Block(step, self._curvature_q, [("", R.HESSIAN_TENSOR)], self._curvature_q.stats,
                                 torch.tensor([[eig, float(its)]], dtype=torch.float64), [()]))
            if self.snr_due(step):
                n = min(self.snr_examples, int(x.shape[0]))
                snr = gradient_snr(model, loss_fn, x[:n], y[:n])
                names = [name for name, _ in self.params if name in snr]
                out.append(Block(step, self._snr_q, [split_name(name) for name in names], self._snr_q.stats,
                                 torch.tensor([[snr[name]] for name in names], dtype=torch.float64),
                                 [()] * len(names)))
        return out


__all__ = ["HostValues", "SecondOrder"]

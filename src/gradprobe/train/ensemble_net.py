"""M same-shaped MLPs as one flat ``(M, P)`` parameter tensor, with a hand-written batched forward/backward.

Op dispatch, not arithmetic, bounds these tiny nets, so every op here covers all M models:
``baddbmm`` over a leading model dimension and, per run of equal activations, autograd's own
activation backward kernel (``ensemble_kernels``), writing into per-layer buffers preallocated
per batch size. The flat layout lets one optimizer step all M models with a handful of ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradprobe.models.activations import ActivationSpec
from gradprobe.models.mlp import MLP
from gradprobe.train.ensemble_kernels import backward_kernel, forward_kernel

_KEEP_EVAL = 2**22  # evaluation buffers up to this many floats are kept between calls (fresh pages cost)


@dataclass(frozen=True)
class ParamSlot:
    """Where one parameter of every model lives in the flat ``(M, P)`` buffer."""

    name: str  # e.g. layers.2.weight
    shape: tuple[int, ...]  # shape of one model's parameter
    start: int
    stop: int


@dataclass
class Pass:
    """Everything one batched forward/backward produced; shapes carry the model dimension M first."""

    zs: list[torch.Tensor]  # Linear outputs, (M, B, out) each
    hs: list[torch.Tensor]  # activation outputs, (M, B, width) each
    dzs: list[torch.Tensor]  # dL/d(Linear output), same shapes as zs
    dhs: list[torch.Tensor]  # dL/d(activation output), same shapes as hs
    loss: torch.Tensor  # (M,) data loss + L2 term, as the single-model loop computes it (grads: data loss only)


def _runs(activations: list[ActivationSpec]) -> list[tuple[int, int, ActivationSpec]]:
    """Contiguous runs ``(start, stop, spec)`` of equal activations along the model dimension."""
    runs: list[tuple[int, int, ActivationSpec]] = []
    for i, spec in enumerate(activations):
        if runs and runs[-1][2] == spec:
            runs[-1] = (runs[-1][0], i + 1, spec)
        else:
            runs.append((i, i + 1, spec))
    return runs


class _Workspace:
    """Per-layer buffers (M, B, width) of one batch size, and each activation run's slice of them."""

    def __init__(self, m: int, batch: int, outs: list[int], runs: list[tuple[int, int]], grads: bool,
                 device: torch.device, dtype: torch.dtype) -> None:
        def make(widths: list[int]) -> list[torch.Tensor]:
            return [torch.empty(m, batch, w, device=device, dtype=dtype) for w in widths]

        def split(bufs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
            return [[b if len(runs) == 1 else b[start:stop] for start, stop in runs] for b in bufs]

        hidden = outs[:-1]
        self.z, self.h = make(outs), make(hidden)  # Linear outputs (all layers), activation outputs
        self.dz, self.dh = (make(hidden), make(hidden)) if grads else ([], [])  # of the hidden layers
        self.zr, self.hr, self.dzr, self.dhr = split(self.z), split(self.h), split(self.dz), split(self.dh)


class BatchedMLP:
    """M MLPs with identical widths (activations may differ per model) trained as one computation.

    Args:
        models: initialised MLPs, one per member; their parameters are copied, not shared.
        loss: ``bce`` (one logit) or ``cross_entropy``.
        l2: coefficient of the ``0.5 * l2 * sum(W^2)`` penalty on weight matrices.
    """

    def __init__(self, models: list[MLP], loss: str, l2: float) -> None:
        self.loss_kind, self.l2 = loss, l2
        names = [n for n, _ in models[0].named_parameters()]
        self.slots: list[ParamSlot] = []
        start = 0
        for name, p in models[0].named_parameters():
            self.slots.append(ParamSlot(name, tuple(p.shape), start, start + p.numel()))
            start += p.numel()
        rows = [torch.cat([m.get_parameter(n).detach().reshape(-1) for n in names]) for m in models]
        self.flat = torch.stack(rows)  # (M, P), a leaf the optimizer updates in place
        self.flat.grad = torch.zeros_like(self.flat)
        mask = torch.zeros(start, dtype=self.flat.dtype)
        for slot in self.slots:
            if len(slot.shape) >= 2:
                mask[slot.start:slot.stop] = 1.0
        self.weight_mask = mask  # (P,) 1 on weight matrices (the L2 term skips biases)
        runs = _runs([m.activation for m in models])
        self._runs = [(a, b) for a, b, _ in runs]
        self._fwd = [forward_kernel(spec) for _, _, spec in runs]
        self._bwd = [backward_kernel(spec) for _, _, spec in runs]
        self.n_layers = len(self.slots) // 2
        self._outs = [self.slots[2 * i].shape[0] for i in range(self.n_layers)]
        self._minus_one = torch.full((1, 1, 1), -1.0, device=self.flat.device, dtype=self.flat.dtype)
        self._spaces: dict[tuple[int, int, bool], _Workspace] = {}  # by (models, batch size, grads)
        views = self.views(self.flat)  # the optimizer updates flat in place, so these views stay valid
        self._weights = views[0::2]  # (M, out, in) each
        self._cached = [(w.transpose(1, 2), b.unsqueeze(1)) for w, b in zip(views[0::2], views[1::2])]

    @property
    def size(self) -> int:
        """Number of models M."""
        return int(self.flat.shape[0])

    @property
    def grad(self) -> torch.Tensor:
        """The flat gradients (M, P) of the last ``train_pass``."""
        assert self.flat.grad is not None
        return self.flat.grad

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views ``(M, *shape)`` of a flat ``(M, P)`` tensor (parameters or gradients)."""
        m = flat.shape[0]
        return [flat[:, s.start:s.stop].view(m, *s.shape) for s in self.slots]

    def _layers(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if flat is self.flat:
            return self._cached
        views = self.views(flat)
        return [(views[2 * i].transpose(1, 2), views[2 * i + 1].unsqueeze(1)) for i in range(self.n_layers)]

    def _space(self, m: int, batch: int, grads: bool) -> _Workspace:
        key = (m, batch, grads)
        space = self._spaces.get(key)
        if space is None:
            space = _Workspace(m, batch, self._outs, self._runs, grads, self.flat.device, self.flat.dtype)
            if grads or m * batch * sum(self._outs) <= _KEEP_EVAL:  # large evaluation buffers are not kept
                self._spaces[key] = space
        return space

    def forward(self, flat: torch.Tensor, x: torch.Tensor, grads: bool = False) -> _Workspace:
        """Linear outputs ``.z`` and activation outputs ``.h`` for inputs ``x`` (M, B, d) or shared ``(B, d)``.

        With ``grads``, the buffers are the training ones of this batch size, overwritten by the
        next call, with room for the backward pass.
        """
        h = x if x.dim() == 3 else x.expand(flat.shape[0], *x.shape)  # (M, B, d)
        space = self._space(flat.shape[0], h.shape[1], grads)
        last = self.n_layers - 1
        for layer, (wt, b) in enumerate(self._layers(flat)):  # (M, in, out), (M, 1, out)
            torch.baddbmm(b, h, wt, out=space.z[layer])  # (M, B, out)
            if layer < last:
                for fn, z, out in zip(self._fwd, space.zr[layer], space.hr[layer]):
                    fn(z, out)
                h = space.h[layer]
        return space

    def data_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean data loss per model, (M,), for logits (M, B, out) and labels (M, B) (float for bce)."""
        if self.loss_kind == "bce":
            per = F.binary_cross_entropy_with_logits(logits.squeeze(-1), y, reduction="none")
        else:
            m, b, c = logits.shape
            per = F.cross_entropy(logits.reshape(m * b, c), y.reshape(-1), reduction="none").view(m, b)
        return per.mean(1)

    def penalty(self, flat: torch.Tensor) -> torch.Tensor:
        """The L2 term per model, (M,); zeros when l2 is 0."""
        if self.l2 == 0:
            return torch.zeros(flat.shape[0], dtype=flat.dtype)
        return 0.5 * self.l2 * (flat * flat * self.weight_mask).sum(1)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct predictions per model, (M,)."""
        pred = (logits.squeeze(-1) > 0).long() if self.loss_kind == "bce" else logits.argmax(-1)
        return (pred == y).sum(1)

    def _output_grad(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data loss (M,) and dL/dlogits (M, B, out) of the mean loss."""
        batch = logits.shape[1]
        if self.loss_kind == "bce":
            return self.data_loss(logits, y), (torch.sigmoid(logits) - y.unsqueeze(-1)) / batch
        logp = torch.log_softmax(logits, -1)  # (M, B, C); cross_entropy is log_softmax + nll
        target = y.unsqueeze(-1)  # (M, B, 1)
        loss = -logp.gather(-1, target).squeeze(-1).mean(1)
        return loss, logp.exp().scatter_add_(-1, target, self._minus_one.expand(target.shape)) / batch

    def add_l2(self) -> None:
        """Add the L2 term's gradient ``l2 * W`` to ``flat.grad`` (after the data-loss gradient was recorded)."""
        if self.l2:
            self.grad.addcmul_(self.flat, self.weight_mask, value=self.l2)

    def train_pass(self, x: torch.Tensor, y: torch.Tensor) -> Pass:
        """Forward and backward on one batch per model; writes the data-loss gradients into ``flat.grad``."""
        flat, grad = self.flat, self.flat.grad
        assert grad is not None
        m = flat.shape[0]
        space = self.forward(flat, x, grads=True)
        loss, dz = self._output_grad(space.z[-1], y)
        top = dz
        if self.l2:
            loss = loss + self.penalty(flat)
        grads = []
        inputs = [x if x.dim() == 3 else x.expand(m, *x.shape)] + space.h
        for layer in range(self.n_layers - 1, -1, -1):
            grads.append(torch.bmm(dz.transpose(1, 2), inputs[layer]).view(m, -1))  # dW, (M, out * in)
            grads.append(dz.sum(1))  # db, (M, out)
            if layer > 0:
                i = layer - 1
                torch.bmm(dz, self._weights[layer], out=space.dh[i])  # (M, B, in)
                for fn, dh, z, h, out in zip(self._bwd, space.dhr[i], space.zr[i], space.hr[i], space.dzr[i]):
                    fn(dh, z, h, out)
                dz = space.dz[i]
        order = [g for pair in zip(grads[-2::-2], grads[::-2]) for g in pair]
        torch.cat(order, dim=1, out=grad)
        return Pass(space.z, space.h, space.dz + [top], space.dh, loss)


__all__ = ["BatchedMLP", "ParamSlot", "Pass"]

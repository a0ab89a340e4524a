"""M same-shaped MLPs as one flat ``(M, P)`` parameter tensor, with a hand-written batched forward/backward.

Op dispatch, not arithmetic, bounds these tiny nets, so every op here covers all M models:
``baddbmm`` over a leading model dimension and closed-form activation derivatives
(``activation_spec(...).derivative``, which follows autograd's conventions at kinks). The flat
layout lets one torch optimizer step all M models with a handful of elementwise ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradprobe.models.activations import ActivationSpec
from gradprobe.models.mlp import MLP


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
    loss: torch.Tensor  # (M,) data loss + L2 term, as the single-model loop computes it


# Derivatives from the activation's output where that is exact and saves recomputing the activation:
# the same expressions as activation_spec(...).derivative(z) evaluated on h = phi(z).
_FROM_OUTPUT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": lambda h: h * (1 - h),
    "tanh": lambda h: 1 - h * h,
    "relu": torch.sign,  # relu output is >= 0, so its sign is 1 exactly where z > 0
}


# Activations whose autograd backward is where(kill, 0, grad * slope): a non-finite gradient
# becomes 0 where the mask is set, where a product would give NaN. The masks are autograd's own
# (relu tests its output <= 0, so a NaN output passes the gradient on).
_GATES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda z, h: h <= 0,
    "hard_sigmoid": lambda z, h: ~((z > -3) & (z < 3)),
}


def _runs(activations: list[ActivationSpec]) -> list[tuple[int, int, ActivationSpec]]:
    """Contiguous runs ``(start, stop, spec)`` of equal activations along the model dimension."""
    runs: list[tuple[int, int, ActivationSpec]] = []
    for i, spec in enumerate(activations):
        if runs and runs[-1][2] == spec:
            runs[-1] = (runs[-1][0], i + 1, spec)
        else:
            runs.append((i, i + 1, spec))
    return runs


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
        self.runs = _runs([m.activation for m in models])
        self.n_layers = len(self.slots) // 2
        self._minus_one = torch.full((1, 1, 1), -1.0, device=self.flat.device)
        self._gated = any(spec.name in _GATES for _, _, spec in self.runs)
        self._gate_list: list[torch.Tensor] = []
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

    def _act(self, z: torch.Tensor, slope: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """phi(z), and if asked phi'(z) and the gate of where-style backwards, each activation on its run."""
        hs, ds, gates = [], [], []
        for start, stop, spec in self.runs:
            zi = z if len(self.runs) == 1 else z[start:stop]
            fn, derivative = spec.fn, spec.derivative
            assert fn is not None and derivative is not None  # can_ensemble admits elementwise ones only
            h = fn(zi)
            hs.append(h)
            if slope:
                from_output = _FROM_OUTPUT.get(spec.name)
                ds.append(from_output(h) if from_output is not None else derivative(zi))
                gate = _GATES.get(spec.name)
                if self._gated:
                    gates.append(gate(zi, h) if gate is not None else torch.zeros_like(h, dtype=torch.bool))
        if len(hs) == 1:
            return hs[0], ds[0] if slope else None, gates[0] if gates else None
        return (torch.cat(hs), torch.cat(ds) if slope else None, torch.cat(gates) if gates else None)

    def _layers(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if flat is self.flat:
            return self._cached
        views = self.views(flat)
        return [(views[2 * i].transpose(1, 2), views[2 * i + 1].unsqueeze(1)) for i in range(self.n_layers)]

    def forward(self, flat: torch.Tensor, x: torch.Tensor,
                slopes: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Linear outputs and activation outputs for inputs ``x`` (M, B, d) or shared ``(B, d)``.

        With a list ``slopes``, phi'(z) of every hidden layer is appended to it.
        """
        h = x if x.dim() == 3 else x.expand(flat.shape[0], *x.shape)  # (M, B, d)
        zs, hs = [], []
        for layer, (wt, b) in enumerate(self._layers(flat)):  # (M, in, out), (M, 1, out)
            z = torch.baddbmm(b, h, wt)  # (M, B, out)
            zs.append(z)
            if layer < self.n_layers - 1:
                h, d, gate = self._act(z, slopes is not None)
                hs.append(h)
                if slopes is not None and d is not None:
                    slopes.append(d)
                    if gate is not None:
                        self._gate_list.append(gate)
        return zs, hs

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

    def train_pass(self, x: torch.Tensor, y: torch.Tensor) -> Pass:
        """Forward and backward on one batch per model; writes the gradients into ``flat.grad``."""
        flat, grad = self.flat, self.flat.grad
        assert grad is not None
        slopes: list[torch.Tensor] = []
        self._gate_list = []
        zs, hs = self.forward(flat, x, slopes)
        logits = zs[-1]  # (M, B, out)
        batch = logits.shape[1]
        if self.loss_kind == "bce":
            loss = self.data_loss(logits, y)
            dz = (torch.sigmoid(logits) - y.unsqueeze(-1)) / batch
        else:  # cross_entropy is log_softmax + nll: share the log-probabilities
            logp = torch.log_softmax(logits, -1)  # (M, B, C)
            target = y.unsqueeze(-1)  # (M, B, 1)
            loss = -logp.gather(-1, target).squeeze(-1).mean(1)
            dz = logp.exp().scatter_add_(-1, target, self._minus_one.expand(target.shape)) / batch
        if self.l2:
            loss = loss + self.penalty(flat)
        grads = []
        dzs: list[torch.Tensor] = [dz]
        dhs: list[torch.Tensor] = []
        inputs = [x if x.dim() == 3 else x.expand(flat.shape[0], *x.shape)] + hs
        for layer in range(self.n_layers - 1, -1, -1):
            grads.append(torch.bmm(dz.transpose(1, 2), inputs[layer]).reshape(flat.shape[0], -1))  # dW
            grads.append(dz.sum(1))  # db, (M, out)
            if layer > 0:
                dh = torch.bmm(dz, self._weights[layer])  # (M, B, in)
                dhs.append(dh)
                dz = dh * slopes[layer - 1]
                if self._gated:  # autograd's where-style backward: 0, not NaN * 0, where masked
                    dz = torch.where(self._gate_list[layer - 1], 0.0, dz)
                dzs.append(dz)
        order = [g for pair in zip(grads[-2::-2], grads[::-2]) for g in pair]
        torch.cat(order, dim=1, out=grad)
        if self.l2:
            grad.add_(flat * self.weight_mask, alpha=self.l2)
        return Pass(zs, hs, dzs[::-1], dhs[::-1], loss)


__all__ = ["BatchedMLP", "ParamSlot", "Pass"]

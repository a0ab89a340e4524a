"""Normalisation layers are found by behaviour; saturating activations must not pass for them."""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.structure import model_structure


def test_norm_layers_are_found_and_activations_are_not() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.LayerNorm(16), nn.Sigmoid(),
        nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Tanh(),
        nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Hardtanh(), nn.Linear(16, 1),
    )
    # Large inputs saturate sigmoid/tanh/hardtanh: doubling them changes almost nothing, as for a norm.
    s = model_structure(model, 50 * torch.randn(64, 8))
    assert s["norms"] == ["1", "4"]
    assert s["joins"] == [] and s["tied"] == {} and s["output"] == "10"
    # A norm is invariant to its input's scale, an activation is not: checked here independently.
    x = torch.randn(64, 16)
    with torch.no_grad():
        for module, invariant in ((model[1], True), (model[2], False), (model[5], False), (model[7], False)):
            same = torch.allclose(module(x), module(2 * x), rtol=1e-3, atol=1e-4)
            assert same == invariant


class _Attention(nn.Module):
    """Separate q, k, v projections (as BERT), a scale-free norm written with x * g(x), and an output projection."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6)  # both factors come from the input alone
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / 8**0.5, dim=-1)
        return x + self.out(scores @ self.v(x))


def test_modules_feeding_a_product_of_two_activations_are_marked_bilinear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), _Attention(), nn.Linear(8, 1))
    s = model_structure(model, torch.randn(4, 5, 8))
    assert s["bilinear"] == ["1.q", "1.k", "1.v"]  # the output projection and the outer layers are plain
    # Why they are set apart: dL/dW_q is proportional to the keys (checked with autograd at two key scales).
    x = torch.randn(4, 5, 8)
    grads = []
    for scale in (1.0, 2.0):
        with torch.no_grad():
            model[1].k.weight.mul_(scale)
        model.zero_grad()
        model(x).sum().backward()
        grads.append(model[1].q.weight.grad.abs().mean())
    assert grads[1] > 1.5 * grads[0]

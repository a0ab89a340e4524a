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

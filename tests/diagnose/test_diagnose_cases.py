"""Constructed cases with known answers; evidence numbers checked against p.grad, the weights and retained outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.evidence import bare, sci


def test_deep_sigmoid_with_unit_normal_weights_is_vanishing(cases) -> None:
    model = cases.mlp(nn.Sigmoid, 8, 8, init=lambda w: nn.init.normal_(w, 0.0, 1.0))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.5))
    result = diagnose(probe)
    assert result.verdict == "vanishing"
    first = result.layer("0.weight")
    assert first.verdict == "vanishing"
    # The error reaching layer 0 over the error the output layer sends back into module 15 (last sigmoid).
    expected = cases.median_ratio(rec.delta["0"], rec.delta["15"])
    assert first.numbers["error_ratio"] == pytest.approx(expected, rel=1e-4)
    assert expected < 0.01
    grad = cases.median_ratio(rec.grad["0.weight"], rec.grad["16.weight"])
    assert first.numbers["grad_ratio"] == pytest.approx(grad, rel=1e-4)
    assert first.numbers["grad_mean_abs"] == pytest.approx(np.median(rec.grad["0.weight"]), rel=1e-4)
    assert f"is {bare(expected)} of the error" in first.evidence
    assert f"mean |g| {sci(float(np.median(rec.grad['0.weight'])))}" in first.evidence
    assert first.remedies[0].startswith("use a ReLU-family activation")
    assert result.layer("16.weight").verdict == "healthy"


def test_deep_relu_with_he_init_is_healthy(cases) -> None:
    model = cases.mlp(nn.ReLU, 8, 32, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01))
    result = diagnose(probe)
    assert result.verdict == "healthy"
    assert [e.verdict for e in result.layers] == ["healthy"] * 9
    expected = cases.median_ratio(rec.delta["0"], rec.delta["15"])
    assert 0.1 < expected < 10
    assert result.layer("0.weight").numbers["error_ratio"] == pytest.approx(expected, rel=1e-4)
    assert result.layer("0.weight").remedies == []


def test_relu_with_large_weights_is_exploding(cases) -> None:
    model = cases.mlp(nn.ReLU, 10, 16, init=lambda w: nn.init.normal_(w, 0.0, 3.0))
    probe, rec = cases.train(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    result = diagnose(probe)
    assert result.verdict == "exploding"
    first = result.layer("0.weight")
    assert first.verdict == "exploding"
    expected = cases.median_ratio(rec.delta["0"], rec.delta["19"])
    assert expected > 1e3
    assert first.numbers["error_ratio"] == pytest.approx(expected, rel=1e-4)
    assert f"is {bare(expected)[:-1]} times the error" in first.evidence
    assert any("clip" in r for r in first.remedies)


def test_relu_layer_with_large_negative_bias_is_dead(cases) -> None:
    model = cases.mlp(nn.ReLU, 4, 16)  # torch's default init, so later layers still get a signal
    with torch.no_grad():
        model[4].bias.fill_(-100.0)
    probe, rec = cases.train(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    result = diagnose(probe)
    assert result.verdict == "dead"
    layer = result.layer("4.weight")
    assert layer.verdict == "dead"
    expected = float(np.median(cases.last_window(rec.dead["5"])))
    assert expected == 1.0
    assert layer.numbers["dead_frac"] == expected
    assert "100% of 5's units are dead" in layer.evidence
    assert "bias averages -100" in layer.evidence
    assert layer.remedies[0].startswith("re-initialise the biases")
    # No error gets back through module 5: the layers before it vanish, and that is put down to the dead units.
    assert rec.grad["0.weight"][-1] == 0.0
    assert result.layer("0.weight").verdict == "dead"
    assert result.layer("0.weight").numbers["explained_by"] == "4.weight"


def test_tanh_with_large_weights_is_saturated(cases) -> None:
    model = cases.mlp(nn.Tanh, 3, 16, init=lambda w: nn.init.normal_(w, 0.0, 3.0))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01))
    result = diagnose(probe)
    assert result.verdict == "saturated"
    layer = result.layer("0.weight")
    assert layer.verdict == "saturated"
    expected = float(np.median(cases.last_window(rec.saturated["1"])))
    assert expected >= 0.5
    assert layer.numbers["saturated_frac"] == pytest.approx(expected, rel=1e-6)
    assert f"{100 * expected:.0f}% of 1's outputs are saturated" in layer.evidence
    assert layer.remedies[0].startswith("use smaller initial weights")
    assert result.layer("2.weight").verdict == "saturated"  # its vanishing error is put down to module 3


def test_first_layer_frozen_by_tiny_learning_rate_is_stalled(cases) -> None:
    model = cases.mlp(nn.ReLU, 4, 16, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    rest = [p for n, p in model.named_parameters() if not n.startswith("0.")]
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 1e-9}, {"params": rest}], lr=1e-2)
    probe, rec = cases.train(model, opt)
    result = diagnose(probe)
    assert result.verdict == "stalled"
    layer = result.layer("0.weight")
    assert layer.verdict == "stalled"
    own = float(np.median(cases.last_window(rec.update["0.weight"])))
    peers = float(np.median([np.median(cases.last_window(rec.update[n])) for n in rec.update if n != "0.weight"]))
    assert layer.numbers["update_ratio"] == pytest.approx(own, abs=1e-12)
    assert layer.numbers["peer_update_ratio"] == pytest.approx(peers, rel=1e-4)
    assert layer.remedies[0].startswith("check that the layer is not frozen")
    assert all(e.verdict == "healthy" for e in result.layers[1:])


def test_injected_nan_is_unstable_with_its_step(cases) -> None:
    model = cases.mlp(nn.ReLU, 3, 16, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01), steps=20, poison=7)
    result = diagnose(probe)
    assert result.verdict == "unstable"
    assert rec.nonfinite_step == 7
    assert probe.first_nonfinite is not None and probe.first_nonfinite["step"] == 7
    unstable = [e for e in result.layers if e.verdict == "unstable"]
    assert unstable and min(e.numbers["first_step"] for e in unstable) == 7
    assert "from step 7" in unstable[0].evidence
    assert unstable[0].remedies[0] == "lower the learning rate"

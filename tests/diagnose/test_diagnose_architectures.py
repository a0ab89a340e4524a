"""A CNN and an LSTM get per-layer entries for every weight tensor and a sensible verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.diagnose.engine import diagnose
from gradprobe.probe import Probe


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.act0 = nn.ReLU()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, 3)
        return self.fc(self.flat(self.act1(self.conv1(self.act0(self.conv0(x))))))


class SmallLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, batch_first=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 4) -> (B, 2)
        out, _ = self.lstm(x)  # (B, T, 16)
        return self.fc(out[:, -1])


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 25) -> tuple[Probe, dict[str, list[float]]]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    grads: dict[str, list[float]] = {}
    with Probe(model, opt) as probe:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            for n, p in model.named_parameters():
                grads.setdefault(n, []).append(float(p.grad.abs().mean()))
            opt.step()
    return probe, grads


def test_cnn_is_healthy_with_an_entry_per_weight() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    probe, grads = _fit(SmallCNN(), x, y)
    result = diagnose(probe)
    assert [e.layer for e in result.layers] == ["conv0.weight", "conv1.weight", "fc.weight"]
    assert result.verdict == "healthy"
    conv0 = result.layer("conv0.weight")
    expected = float(np.median(np.asarray(grads["conv0.weight"]) / np.asarray(grads["fc.weight"])))
    assert conv0.numbers["grad_ratio"] == pytest.approx(expected, rel=1e-4)
    assert "act0's units dead" in conv0.evidence
    assert "flat" in result.notes[1]  # the error the output layer sends back is read at the Flatten output


def test_lstm_is_healthy_with_an_entry_per_weight() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 6, 4)
    y = (x[:, :, 0].sum(dim=1) > 0).long()
    probe, grads = _fit(SmallLSTM(), x, y)
    result = diagnose(probe)
    assert [e.layer for e in result.layers] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"]
    assert result.verdict == "healthy"
    ih = result.layer("lstm.weight_ih_l0")
    expected = float(np.median(np.asarray(grads["lstm.weight_ih_l0"]) / np.asarray(grads["fc.weight"])))
    assert ih.numbers["grad_ratio"] == pytest.approx(expected, rel=1e-4)

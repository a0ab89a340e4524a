"""Attach gradprobe to your own model and training loop: a small CNN on random data.

Run: python examples/own_model.py
"""

from __future__ import annotations

import torch
from torch import nn

import gradprobe


class SmallCNN(nn.Module):
    """Not an nn.Sequential: the probe names layers by module path (conv1, conv2, head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Sigmoid()
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.head(x.flatten(1))


def main() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    with gradprobe.Probe(model, opt, every=5, hist_every=25) as probe:
        for step in range(50):
            idx = torch.randint(0, 256, (32,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the probe sees clipped gradients
            opt.step()
    frame = probe.frame()
    grads = frame[(frame.kind == "grad") & (frame.stat == "mean_abs")]
    print(grads.pivot_table(index="step", columns=["layer", "tensor"], values="value").tail(3).to_string())
    deltas = frame[(frame.kind == "delta") & (frame.stat == "mean_abs")]
    print(deltas.groupby("layer", sort=False).value.median().to_string())


if __name__ == "__main__":
    main()

"""Fixtures for the sweep tests: a tiny experiment file with a grid (8 configurations, ~0.1 s each)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """\
name: tiny
data: {name: circles, n_samples: 120, noise: 0.1, seed: 0}
model: {depth: 2, width: 4, init: "normal:1"}
optimizer: {name: rmsprop, lr: 0.01}
train: {loss: bce, batch_size: 32, epochs: 2}
record: {every: 1}
seeds: 2
grid:
  activation: [sigmoid, tanh]
  depth: [2, 3]
"""


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    """Path of the tiny experiment: activation x depth grid, 2 seeds, 2 epochs on 120 circles."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)

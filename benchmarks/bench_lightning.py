"""GradprobeCallback overhead: the whole ``trainer.fit`` wall time with and without the callback.

MLP 784 -> 4 x 256 -> 10 (ReLU), Adam, batch 128, random MNIST-shaped data, CSVLogger in every
variant (the callback's statistics go to it too). Variants run interleaved, ``REPS`` times each;
the overhead is the ratio of medians. ``default`` is the callback at its default cadence (a 1% time
budget) with a run store; ``every1`` records every step, for scale.
Run: ``python benchmarks/bench_lightning.py [--epochs N] [--reps R]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradprobe.integrations.lightning import GradprobeCallback

VARIANTS = ("none", "default", "every1")


class MLP(pl.LightningModule):
    """The benchmark model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Linear(784 if i == 0 else 256, 256), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(256, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _fit(variant: str, epochs: int, root: Path) -> float:
    """Seconds of one ``trainer.fit`` of ``variant`` (trainer construction excluded)."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(2048, 784, generator=g), torch.randint(0, 10, (2048,), generator=g))
    callbacks: list[Any] = []
    if variant != "none":
        callbacks.append(GradprobeCallback(store=root / "store", **({"every": 1} if variant == "every1" else {})))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=CSVLogger(root / "logs"),
                         callbacks=callbacks, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, log_every_n_steps=50)
    start = time.perf_counter()
    trainer.fit(MLP(), DataLoader(data, batch_size=128))
    return time.perf_counter() - start


def main() -> None:
    """Interleaved repetitions of every variant; print medians and overheads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)  # 16 steps per epoch
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("gradprobe").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        _fit("default", 1, Path(tmp))  # warm-up: imports, first-touch allocations
        for _ in range(args.reps):
            for variant in VARIANTS:
                times[variant].append(_fit(variant, args.epochs, Path(tmp)))
    base = float(np.median(times["none"]))
    print(f"{args.epochs * 16} optimizer steps, {args.reps} interleaved reps, medians of whole fit wall time")
    for variant in VARIANTS:
        med = float(np.median(times[variant]))
        print(f"  {variant:8s} {med:7.3f} s  overhead {100 * (med / base - 1):+6.2f}%  "
              f"(runs: {', '.join(f'{t:.2f}' for t in times[variant])})")


if __name__ == "__main__":
    main()

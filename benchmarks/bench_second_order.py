"""Cost of the second-order signals per call on the benchmark MLP 784 -> 6 x 256 -> 10, batch 128, 1 thread.

Each is timed as ``Probe.second_order`` runs it (sharpness: power iteration with the default 20 products at
most and tol 1e-3; gradient SNR: per-example gradients of the first 32 examples) against one plain training
step (forward, backward, Adam step) on the same batch; median of ``reps`` interleaved calls each, in this
process's CPU time (one torch thread; stable on a machine shared with other jobs, unlike wall time).
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_second_order.py [reps]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import _model  # noqa: E402

from gradprobe import Probe  # noqa: E402


def run(reps: int) -> dict[str, object]:
    """Median seconds per call of a training step and of each signal, and their ratio to the step."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(128, 784, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def signal(**cadence: int) -> None:
        with Probe(model, every=10**9, **cadence) as probe:  # type: ignore[arg-type]
            probe.second_order(loss_fn, (x, y))

    timed = {"train step": step, "sharpness (top Hessian eigenvalue)": lambda: signal(sharpness_every=1),
             "gradient SNR (32 examples)": lambda: signal(snr_every=1)}
    samples: dict[str, list[float]] = {k: [] for k in timed}
    for fn in timed.values():
        fn()  # warm up
    for _ in range(reps):
        for name, fn in timed.items():  # interleaved
            start = time.process_time()
            fn()
            samples[name].append(time.process_time() - start)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    return {"reps": reps, "seconds": med, "x_train_step": {k: v / med["train step"] for k, v in med.items()}}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 7), indent=2))

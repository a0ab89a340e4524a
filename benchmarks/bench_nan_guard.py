"""NaN guard overhead: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, 1 thread, whole runs of 200 steps.

Same model, data and timing as ``bench_probe_overhead.py``: the wall time of a whole run (attach, every
step, the final check and detach) divided by its steps, median over interleaved repetitions.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_nan_guard.py [reps]``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import WARMUP, _model  # noqa: E402

from gradprobe.nan_guard import nan_guard  # noqa: E402

VARIANTS = {"uninstrumented": None, "nan_guard every step": 1, "nan_guard every 10 steps": 10}


def _time_variant(every: int | None, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean seconds per step of one whole run, guard attach and final check included."""
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data

    def train_step(i: int) -> None:
        lo = (i * 128) % 2048
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[lo:lo + 128]), y[lo:lo + 128])
        loss.backward()
        opt.step()
        float(loss.detach())

    for i in range(WARMUP):
        train_step(i)
    start = time.perf_counter()
    guard = nan_guard(model, opt, every=every) if every is not None else contextlib.nullcontext()
    with guard:
        for i in range(steps):
            train_step(i)
    return (time.perf_counter() - start) / steps


def run(reps: int, steps: int = 200, threads: int = 1) -> dict[str, object]:
    """Median over ``reps`` interleaved whole runs of the mean step time, and each variant's overhead."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(reps):
            for name, every in VARIANTS.items():  # interleaved: A B C A B C ...
                samples[name].append(_time_variant(every, steps, data))
    finally:
        torch.set_num_threads(before)
    med = {v: float(np.median(s)) for v, s in samples.items()}
    base = med["uninstrumented"]
    return {"reps": reps, "steps": steps, "threads": threads, "step_seconds": med,
            "overhead": {v: med[v] / base - 1 for v in VARIANTS if v != "uninstrumented"}}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 15), indent=2))

"""NaN guard overhead: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, 1 thread, whole runs of 400 steps.

Same model and data as ``bench_probe_overhead.py``: the time of a whole run (attach, every step, the final
check and detach) divided by its steps, median over interleaved repetitions. Both wall time and this
process's CPU time are reported; on a machine shared with other jobs the CPU time (one torch thread, so
the work the run itself did) is the stable one, and the overhead is computed from it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import WARMUP, _model, mlp_step  # noqa: E402

from gradprobe.nan_guard import nan_guard  # noqa: E402

# name -> (every, check) of the guard; None: no guard
VARIANTS: dict[str, tuple[int, str] | None] = {
    "uninstrumented": None,
    "nan_guard every step": (1, "outputs"),
    "nan_guard every 10 steps": (10, "outputs"),
    "nan_guard check='modules' every step": (1, "modules"),
}


def _time_variant(variant: tuple[int, str] | None, steps: int,
                  data: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per step of one whole run, guard attach and final check included."""
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step = mlp_step(model, opt, data)

    for i in range(WARMUP):
        train_step(i)
    start, cpu = time.perf_counter(), time.process_time()
    guard = nan_guard(model, opt, every=variant[0], check=variant[1]) if variant else contextlib.nullcontext()
    with guard:
        for i in range(steps):
            train_step(i)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def run(reps: int, steps: int = 400, threads: int = 1) -> dict[str, object]:
    """Median over ``reps`` interleaved whole runs of the mean step time, and each variant's overhead."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for _ in range(reps):
            for name, variant in VARIANTS.items():  # interleaved: A B C A B C ...
                samples[name].append(_time_variant(variant, steps, data))
    finally:
        torch.set_num_threads(before)
    wall = {v: float(np.median([w for w, _ in s])) for v, s in samples.items()}
    cpu = {v: float(np.median([c for _, c in s])) for v, s in samples.items()}
    return {"reps": reps, "steps": steps, "threads": threads, "step_seconds_wall": wall, "step_seconds_cpu": cpu,
            "overhead_cpu": {v: cpu[v] / cpu["uninstrumented"] - 1 for v in VARIANTS if v != "uninstrumented"},
            "overhead_wall": {v: wall[v] / wall["uninstrumented"] - 1 for v in VARIANTS if v != "uninstrumented"}}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 15), indent=2))

"""Probe overhead under DDP: 2 gloo ranks on CPU, MLP 784 -> 6 x 256 -> 10, batch 128 per rank, Adam.

Same model and timing as ``bench_probe_overhead.py``: each sample is the wall time of one whole run
(probe attach, every step, every flush with its cross-rank combine, the final detach) divided by its
steps, on rank 0 after a barrier; plain DDP and DDP + probe every 10 steps are interleaved in one job
and the median over repetitions is reported. Each rank runs 1 torch thread.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_distributed.py [reps]``.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import WARMUP, _model, mlp_step  # noqa: E402

from gradprobe.probe import Probe  # noqa: E402

WORLD = 2
EVERY = 10
# name -> Probe keyword arguments; None: plain DDP. The last isolates the live alerts' share (judged at every flush).
PLAIN, PROBED, ALERTS_OFF = "plain DDP", f"DDP + probe every {EVERY} steps", f"DDP + probe every {EVERY} steps, alerts off"
VARIANTS: dict[str, dict[str, Any] | None] = {PLAIN: None, PROBED: {}, ALERTS_OFF: {"alerts": False}}


def _time_variant(probe: dict[str, Any] | None, steps: int, rank: int, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean seconds per step of one whole run on this rank, attach, flushes and detach included."""
    model = DistributedDataParallel(_model(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step = mlp_step(model, opt, data, rank, WORLD)

    for i in range(WARMUP):
        train_step(i)
    dist.barrier()
    start = time.perf_counter()
    if probe is not None:
        with Probe(model, opt, every=EVERY, **probe):
            for i in range(steps):
                train_step(i)
    else:
        for i in range(steps):
            train_step(i)
    return (time.perf_counter() - start) / steps


def _rank(rank: int, port: int, reps: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        gen = torch.Generator().manual_seed(0)
        data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(reps):
            for name, probe in VARIANTS.items():  # interleaved: A B C A B C ...
                samples[name].append(_time_variant(probe, steps, rank, data))
        if rank == 0:
            Path(out).write_text(json.dumps(samples))
    finally:
        dist.destroy_process_group()


def run(reps: int, steps: int = 400) -> dict[str, object]:
    """Median over ``reps`` interleaved whole runs (rank 0's clock) of the mean step time, and the overhead."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "samples.json")
        mp.start_processes(_rank, args=(port, reps, steps, out), nprocs=WORLD, start_method="spawn")
        samples = json.loads(Path(out).read_text())
    med = {v: float(np.median(s)) for v, s in samples.items()}
    return {"reps": reps, "steps": steps, "world": WORLD, "every": EVERY, "step_seconds": med,
            "all_step_seconds": samples, "overhead": {v: med[v] / med[PLAIN] - 1 for v in (PROBED, ALERTS_OFF)}}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 7), indent=2))

"""Probe overhead on a torch.compile'd model: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, inductor on CPU.

Each sample is one whole run: a fresh model, ``torch.compile(model)``, then :data:`COMPILE_STEPS` steps whose
time (dynamo tracing and inductor compiling the graphs: one without the probe, two with it, recording
and not) is reported separately as compile time, then ``steps`` timed steps (the probe's recorded steps,
every flush and the final detach included) divided by their number. Variants are interleaved, medians
reported. Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_compile.py [reps]``.

``torch.compile(model)``, not ``model.compile()``: with torch 2.13 the latter compiled nothing on this
hook-free MLP (dynamo traced no frame; the "compiled" baseline ran eager), while with the probe's hooks
it compiles the whole forward, which would flatter neither side.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import _model, mlp_step  # noqa: E402

from gradprobe.probe import Probe  # noqa: E402

EVERY = 10
COMPILE_STEPS = 2  # step 0 records and step 1 does not: both graphs are compiled before the timed steps
VARIANTS = ("compiled, uninstrumented", f"compiled, probe every {EVERY} steps")


def _time_variant(variant: str, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float, int]:
    """Seconds per timed step, compile seconds, and graphs dynamo compiled, of one whole run of ``variant``."""
    torch._dynamo.reset()
    counters.clear()
    model = _model(0)
    compiled_model = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step = mlp_step(compiled_model, opt, data)

    start = time.perf_counter()
    probe = Probe(model, opt, every=EVERY) if variant != VARIANTS[0] else None
    for i in range(COMPILE_STEPS):
        train_step(i)
    compiled = time.perf_counter()
    for i in range(COMPILE_STEPS, COMPILE_STEPS + steps):
        train_step(i)
    if probe is not None:
        probe.detach()  # moves the last buffered records to the host: part of the cost
    end = time.perf_counter()
    return (end - compiled) / steps, compiled - start, int(counters["stats"]["unique_graphs"])


def run(reps: int, steps: int = 200) -> dict[str, object]:
    """Median over ``reps`` interleaved whole runs: timed step seconds, compile seconds, overhead, graph count."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    samples: dict[str, list[tuple[float, float, int]]] = {v: [] for v in VARIANTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own, from inside its compiler
        for _ in range(reps):
            for variant in VARIANTS:  # interleaved: A B A B ...
                samples[variant].append(_time_variant(variant, steps, data))
    step = {v: float(np.median([s[0] for s in samples[v]])) for v in VARIANTS}
    return {"reps": reps, "steps": steps, "every": EVERY, "step_seconds": step,
            "compile_seconds": {v: float(np.median([s[1] for s in samples[v]])) for v in VARIANTS},
            "graphs": {v: max(s[2] for s in samples[v]) for v in VARIANTS},
            "overhead": step[VARIANTS[1]] / step[VARIANTS[0]] - 1, "all": samples}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))

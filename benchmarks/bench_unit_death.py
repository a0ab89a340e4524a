"""Per-unit death tracking cost: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, 1 thread, whole runs of 400 steps.

Same model, data and timing as ``bench_probe_overhead.py``: the wall time of a whole run (attach, every
step, every flush, detach and the final ``probe.units()`` read) divided by its steps, median over
interleaved repetitions. The cost of the tracker is the difference between a probe with
``ProbeOptions(units=True)`` and one with ``units=False`` at the same cadence, over the uninstrumented step.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_unit_death.py [reps]``.
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
from bench_probe_overhead import WARMUP, _model, mlp_step  # noqa: E402

from gradprobe.probe import Probe, ProbeOptions  # noqa: E402
from gradprobe.quantities.activation_stats import dead_units, family_of  # noqa: E402
from gradprobe.units import UnitTracker, pool_masks, unit_masks  # noqa: E402

# name -> (every, units) of the probe; None: no probe
VARIANTS: dict[str, tuple[int, bool] | None] = {
    "uninstrumented": None,
    "probe every step, units off": (1, False),
    "probe every step, units on": (1, True),
    "probe every 10 steps, units off": (10, False),
    "probe every 10 steps, units on": (10, True),
}


def _time_variant(variant: tuple[int, bool] | None, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean seconds per step of one whole run, probe attach, detach and the units read included."""
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step = mlp_step(model, opt, data)

    for i in range(WARMUP):
        train_step(i)
    start = time.perf_counter()
    probe = Probe(model, opt, every=variant[0], options=ProbeOptions(units=variant[1]), alerts=False) if variant else None
    for i in range(steps):
        train_step(i)
    if probe is not None:
        probe.detach()
        probe.units()
    return (time.perf_counter() - start) / steps


def run(reps: int, steps: int = 400, threads: int = 1) -> dict[str, object]:
    """Median over ``reps`` interleaved whole runs of the mean step time; the tracker's share of a step."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(reps):
            for name, variant in VARIANTS.items():  # interleaved: A B C A B C ...
                samples[name].append(_time_variant(variant, steps, data))
    finally:
        torch.set_num_threads(before)
    med = {v: float(np.median(s)) for v, s in samples.items()}
    base = med["uninstrumented"]
    return {"reps": reps, "steps": steps, "threads": threads, "step_seconds": med,
            "overhead": {v: med[v] / base - 1 for v in VARIANTS if v != "uninstrumented"},
            # per repetition (on - off) / uninstrumented of that repetition, then the median: robust to drifting load
            "units_cost": {f"every {w}": float(np.median([
                (on - off) / b for on, off, b in zip(samples[f"probe every {w}, units on"],
                                                     samples[f"probe every {w}, units off"], samples["uninstrumented"])]))
                for w in ("step", "10 steps")},
            "tracker_seconds_per_recorded_step": _tracker_seconds()}


def _tracker_seconds(layers: int = 6, reps: int = 2000) -> float:
    """The tracker's own work per recorded step on this model's 6 ReLU outputs (128, 256), timed alone."""
    family = family_of(nn.ReLU())
    outs = [torch.relu(torch.randn(128, 256)) for _ in range(layers)]
    dead = [dead_units(family.dead, None, o) for o in outs]  # the probe computes these for dead_frac anyway
    tracker = UnitTracker()
    start = time.perf_counter()
    for step in range(reps):
        for i, (o, d) in enumerate(zip(outs, dead)):
            masks = pool_masks([unit_masks(family, None, o, 0.01, 1, d)])
            tracker.update(step, str(i), masks)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / reps


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 15), indent=2))

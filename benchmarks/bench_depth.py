"""(4) Depth sweep on circles: depth x 4 activations x 3 arms x 5 seeds, model-steps/s and FLOP/s vs measured peak."""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from gradprobe.data.datasets import load_dataset
from gradprobe.train.ensemble import train_group
from gradprobe.train.experiment import load_experiment

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")


def matmul_peak(size: int = 1024, reps: int = 7) -> float:
    """Median fp32 FLOP/s of one ``size`` x ``size`` matmul on the current thread setting."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times))


def useful_flops(widths: list[int], batch: int) -> int:
    """Matmul FLOPs of one training step of one model: forward 2, weight gradient 2, input gradient 2 per MAC."""
    macs = sum(a * b for a, b in itertools.pairwise(widths))
    return 6 * batch * macs


# Width 5 is the preset's (dispatch-bound); width 256 shows how close the engine gets to the matmul peak.
SHAPES = tuple((5, d) for d in (2, 4, 8, 16, 32)) + tuple((256, d) for d in (2, 4, 8))


def run(reps: int, shapes: tuple[tuple[int, int], ...] = SHAPES, epochs: int = 3) -> dict[str, object]:
    """Per (width, depth): median model-steps/s of the 60-model group (probe on, no store), FLOP/s, share of peak."""
    rows = []
    peaks = []
    for width, depth in shapes:
        runs = [r for act in ACTIVATIONS for r in load_experiment(
            "circles-deep", [f"train.epochs={epochs}", f"model.activation={act}", f"model.depth={depth}",
                             f"model.width={width}"], seeds=5).runs]
        data = load_dataset(runs[0].data)
        steps = 32 * epochs
        secs = []
        for _ in range(reps):
            peaks.append(matmul_peak())  # interleaved with the measurement it is compared to
            start = time.perf_counter()
            train_group(runs, data, None)
            secs.append(time.perf_counter() - start)
        sec = float(np.median(secs))
        model_steps = len(runs) * steps / sec
        flops = model_steps * useful_flops([2] + [width] * depth + [1], 32)
        rows.append({"width": width, "depth": depth, "models": len(runs), "seconds": sec, "model_steps_per_s": model_steps,
                     "useful_flop_per_s": flops})
    peak = float(np.median(peaks))
    for row in rows:
        row["share_of_peak"] = row["useful_flop_per_s"] / peak
    return {"reps": reps, "epochs": epochs, "peak_flop_per_s": peak, "rows": rows}

"""(2, 3, 6) Whole commands as a user runs them, against plain PyTorch loops run as whole processes.

Both sides are timed as processes (interpreter start, imports, data, training, and for gradprobe
the probe, the store and the CLI), so nothing a user waits for is left out of either figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GRADPROBE = [str(Path(sys.executable).parent / "gradprobe")]  # the console script users run
# A plain loop over the same configs (same init, data order, optimizer), no probe, no store: bench_circles.plain_loop.
PLAIN = """
import sys; sys.path.insert(0, {here!r})
import torch; torch.set_num_threads(1)
from bench_circles import plain_loop
from gradprobe.data.datasets import load_dataset
from gradprobe.train.experiment import load_experiment
exp = load_experiment("circles-deep", [], seeds={seeds})
data = load_dataset(exp.runs[0].data)
print(sum(plain_loop(cfg, data) for cfg in exp.runs) / len(exp.runs))
"""


def _timed(cmd: list[str], cwd: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def _pair(gradprobe_args: list[str], seeds: int, reps: int) -> dict[str, object]:
    """Interleaved whole-process timings of a gradprobe command and the plain loop over the same models."""
    times: dict[str, list[float]] = {"gradprobe": [], "plain loop": []}
    plain = [sys.executable, "-c", PLAIN.format(here=str(HERE), seeds=seeds)]
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            times["gradprobe"].append(_timed(GRADPROBE + gradprobe_args + ["--store", tmp], tmp))
            times["plain loop"].append(_timed(plain, tmp))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"seconds": med, "all_seconds": times, "ratio": med["gradprobe"] / med["plain loop"]}


STARTUP = {"--help": ["--help"], "presets": ["presets"], "ls": ["ls"], "show": ["show", "circles-shallow.relu"],
           "query": ["query", "select count(*) as n from stats"]}  # commands that do not train (target 6)


def startup(reps: int) -> dict[str, dict[str, object]]:
    """Median wall time of each command that does not train, run as a user runs it, over a store of 3 short runs."""
    with tempfile.TemporaryDirectory() as tmp:
        _timed(GRADPROBE + ["run", "circles-shallow", "--set", "train.epochs=1", "--no-report", "--store", tmp], tmp)
        times: dict[str, list[float]] = {name: [] for name in STARTUP}
        for name, args in STARTUP.items():
            cmd = GRADPROBE + args + ([] if name in ("--help", "presets") else ["--store", tmp])
            _timed(cmd, tmp)  # warm the file cache once
            times[name] = [_timed(cmd, tmp) for _ in range(max(5, reps))]
    return {name: {"seconds": float(np.median(t)), "all": t} for name, t in times.items()}


def run(reps: int) -> dict[str, object]:
    """Target 2 (sweep, 30 models), target 3 (one preset run, 3 models) and target 6 (start-up of `presets`, ...)."""
    sweep = _pair(["sweep", "circles-deep", "--seeds", "10"], seeds=10, reps=reps)
    single = _pair(["run", "circles-deep", "--no-report"], seeds=1, reps=reps)
    starts = startup(reps)
    return {"reps": reps, "sweep": {**sweep, "speedup": 1 / sweep["ratio"]}, "single": single,
            "presets_seconds": starts["presets"]["seconds"], "presets_all": starts["presets"]["all"],
            "startup": starts}

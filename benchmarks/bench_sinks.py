"""Overhead of each live sink (TensorBoard, MLflow file store, W&B offline) on a circles-deep run vs none.

Run: python benchmarks/bench_sinks.py [REPS] [EPOCHS]. Whole-run wall time of ``run_one`` (store on,
preset cadence: stats and histograms every epoch), variants interleaved per repetition, medians;
plus the median seconds spent inside the sink (constructor, add_* calls, finish).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.data.datasets import load_dataset
from gradprobe.sinks import MLflowSink, RunSink, TensorBoardSink, WandbSink
from gradprobe.train.config import RunConfig
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_one

Make = Callable[[RunConfig, str | None, Path], RunSink]
VARIANTS: dict[str, Make | None] = {
    "no sink": None,
    "tensorboard": lambda cfg, run_id, tmp: TensorBoardSink(tmp / "tb", cfg.experiment, cfg.arm, cfg.seed),
    "mlflow (file store)": lambda cfg, run_id, tmp: MLflowSink(str(tmp / "mlruns"), cfg.experiment, run_id,
                                                               params=cfg.model_dump(mode="json")),
    "wandb (offline)": lambda cfg, run_id, tmp: WandbSink("bench", name=run_id, dir=str(tmp),
                                                          config=cfg.model_dump(mode="json")),
}


class Timed:
    """A RunSink wrapper that adds up the seconds spent in the wrapped sink's calls."""

    def __init__(self, make: Callable[[], RunSink]) -> None:
        start = time.perf_counter()
        self.sink = make()
        self.seconds = time.perf_counter() - start

    def _time(self, call: Callable[..., None], *args: Any) -> None:
        start = time.perf_counter()
        call(*args)
        self.seconds += time.perf_counter() - start

    def add_stats(self, df: pd.DataFrame) -> None:
        self._time(self.sink.add_stats, df)

    def add_hists(self, df: pd.DataFrame) -> None:
        self._time(self.sink.add_hists, df)

    def add_metrics(self, df: pd.DataFrame) -> None:
        self._time(self.sink.add_metrics, df)

    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        self._time(self.sink.finish, status, summary, error)


def run(reps: int, epochs: int) -> dict[str, Any]:
    """Interleaved repetitions of every variant; median wall seconds, overhead vs no sink, time in the sink."""
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"})
    cfg = next(c for c in load_experiment("circles-deep", [f"train.epochs={epochs}"], None).runs if c.arm == "tanh")
    data = load_dataset(cfg.data)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    inside: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(reps):
        for name, make in VARIANTS.items():
            with tempfile.TemporaryDirectory() as tmp:
                timed: list[Timed] = []

                def sinks_for(c: RunConfig, run_id: str | None, make: Make | None = make,
                              tmp: Path = Path(tmp)) -> list[Timed]:
                    if make is not None:
                        timed.append(Timed(lambda: make(c, run_id, tmp)))
                    return timed

                start = time.perf_counter()
                steps = run_one(cfg, Path(tmp) / "store", data, sinks_for=sinks_for).summary["steps"]
                wall[name].append(time.perf_counter() - start)
                inside[name].append(sum(t.seconds for t in timed))
    med = {name: float(np.median(v)) for name, v in wall.items()}
    base = med["no sink"]
    return {"reps": reps, "epochs": epochs, "steps": steps, "seconds": med,
            "overhead_pct": {name: 100 * (s / base - 1) for name, s in med.items() if name != "no sink"},
            "seconds_inside_sink": {name: float(np.median(v)) for name, v in inside.items() if name != "no sink"},
            "all_seconds": wall}


if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(json.dumps(run(reps, epochs), indent=2))

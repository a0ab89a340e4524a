"""Run every arm x seed of an experiment into a store, one run directory each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.store.layout import new_run_id
from gradprobe.store.writer import RunWriter
from gradprobe.train.config import RunConfig
from gradprobe.train.env import environment
from gradprobe.train.experiment import Experiment
from gradprobe.train.loop import Progress, RunResult, Trainer

ProgressFactory = Callable[[RunConfig], Progress | None]


def run_one(cfg: RunConfig, store: Path | None, data: Dataset | None = None,
            progress: Progress | None = None, batch: str | None = None) -> RunResult:
    """Train one configuration; with a store, everything lands in a new run directory there.

    ``batch`` names the invocation the run belongs to, so an experiment name can later be
    resolved to the runs of its latest invocation.
    """
    data = data if data is not None else load_dataset(cfg.data)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    writer = None
    if store is not None:
        run_id = new_run_id(cfg.experiment, cfg.arm, cfg.seed)
        writer = RunWriter(store, run_id, config=cfg.model_dump(mode="json"), env=environment(cfg.device),
                           meta={"experiment": cfg.experiment, "arm": cfg.arm, "seed": cfg.seed, "batch": batch})
        with writer:
            return Trainer(cfg, data, writer, progress).run()
    return Trainer(cfg, data, None, progress).run()


def run_experiment(exp: Experiment, store: Path | None, progress: ProgressFactory | None = None) -> list[RunResult]:
    """Train every run of ``exp`` in order, loading each distinct data set once."""
    cache: dict[str, Dataset] = {}
    batch = new_run_id(exp.name, "batch", None)
    results = []
    for cfg in exp.runs:
        key = cfg.data.model_dump_json()
        if key not in cache:
            cache[key] = load_dataset(cfg.data)
        results.append(run_one(cfg, store, cache[key], progress(cfg) if progress else None, batch))
    return results


__all__ = ["run_experiment", "run_one"]

"""Run every arm x seed of an experiment into a store, one run directory each."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import ValidationError

from gradprobe import records as R
from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe
from gradprobe.store.artifacts import drop_later_parts
from gradprobe.store.layout import CHECKPOINT, new_run_id, resolve_store
from gradprobe.store.reader import load_run
from gradprobe.store.writer import RunWriter, is_being_written
from gradprobe.train import setup
from gradprobe.train.checkpoint import load_checkpoint
from gradprobe.train.config import RunConfig
from gradprobe.train.env import open_run
from gradprobe.train.experiment import Experiment, format_validation_error
from gradprobe.train.loop import Progress, RunResult, RunSink, Trainer

log = logging.getLogger(__name__)
_DEVICE_TYPES = ("cpu", "cuda", "mps")

ProgressFactory = Callable[[RunConfig], Progress | None]
SinksFactory = Callable[[RunConfig, str | None], Sequence[RunSink]]  # (config, run id) -> extra live sinks


def run_one(cfg: RunConfig, store: Path | None, data: Dataset | None = None,
            progress: Progress | None = None, batch: str | None = None, *,
            sinks_for: SinksFactory | None = None) -> RunResult:
    """Train one configuration; with a store, everything lands in a new run directory there.

    ``batch`` names the invocation the run belongs to, so an experiment name can later be
    resolved to the runs of its latest invocation. ``sinks_for(cfg, run_id)`` gives extra
    sinks that see the records live (e.g. TensorBoard).
    """
    data = data if data is not None else load_dataset(cfg.data)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    writer = None
    if store is not None:
        run_id = new_run_id(cfg.experiment, cfg.arm, cfg.seed)
        sinks = list(sinks_for(cfg, run_id)) if sinks_for else []  # before the run exists: they may refuse
        writer = open_run(store, run_id, cfg, batch)
        with writer:
            return _run_with_sinks(Trainer(cfg, data, writer, progress, sinks=sinks), sinks)
    sinks = list(sinks_for(cfg, None)) if sinks_for else []
    return _run_with_sinks(Trainer(cfg, data, None, progress, sinks=sinks), sinks)


def _run_with_sinks(trainer: Trainer, sinks: Sequence[RunSink]) -> RunResult:
    """Run, and on any failure still close the live sinks so what they buffered is written."""
    try:
        return trainer.run()
    except BaseException as exc:
        status = R.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else R.FAILED
        for sink in sinks:
            sink.finish(status, None, f"{type(exc).__name__}: {exc}")
        raise


def preflight(cfg: RunConfig, data: Dataset) -> None:
    """Check what only the data and torch can tell (loss vs classes, device, probe patterns) up front.

    Raises:
        GradprobeError: naming the field, the value and what is allowed.
    """
    allowed = "cpu" + (", cuda" if torch.cuda.is_available() else "")
    try:
        if torch.device(cfg.device).type not in _DEVICE_TYPES:
            raise RuntimeError(f"device type {torch.device(cfg.device).type!r} cannot train")
        torch.empty(0, device=cfg.device)
    except (RuntimeError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradprobeError(f"device: {cfg.device!r} is not usable here ({reason}); allowed: {allowed}") from None
    model = setup.build_model(cfg, data, setup.loss_kind(cfg, data))
    Probe(model, params=cfg.record.params, modules=cfg.record.modules,
          options=setup.probe_options(cfg.record)).detach()


def prepare(exp: Experiment) -> dict[str, Dataset]:
    """Load each distinct data set once and check every run, before anything is written.

    Returns:
        The data sets keyed by their config's JSON.
    """
    cache: dict[str, Dataset] = {}
    for cfg in exp.runs:
        key = cfg.data.model_dump_json()
        if key not in cache:
            cache[key] = load_dataset(cfg.data)
        preflight(cfg, cache[key])
    return cache


def run_experiment(exp: Experiment, store: Path | None, progress: ProgressFactory | None = None,
                   sinks_for: SinksFactory | None = None) -> list[RunResult]:
    """Train every run of ``exp`` in order, loading each distinct data set once.

    Every data set is loaded and every run checked before the first one starts, so bad input
    leaves nothing in the store.
    """
    cache = prepare(exp)
    batch = new_run_id(exp.name, "batch", None)
    return [run_one(cfg, store, cache[cfg.data.model_dump_json()], progress(cfg) if progress else None, batch,
                    sinks_for=sinks_for)
            for cfg in exp.runs]


def resume_run(run_id: str, store: Path | None, progress: Progress | None = None) -> RunResult:
    """Continue an interrupted run in place from its last checkpoint (from step 0 if it has none).

    Part files written after the checkpoint are deleted first, so each step is stored once.

    Raises:
        GradprobeError: if the run is unknown, already ended, still being written, or its
            config or checkpoint is unreadable.
    """
    root = resolve_store(store)
    stored = load_run(run_id, root)
    if stored.status in (R.FINISHED, R.DIVERGED):
        raise GradprobeError(f"--resume: run {stored.run_id!r} has status {stored.status}; "
                             "only interrupted, failed or killed runs can be resumed")
    if stored.status == R.RUNNING and is_being_written(stored.meta):
        raise GradprobeError(f"--resume: run {stored.run_id!r} is still being written by process "
                             f"{stored.meta.get('pid')}; stop it first")
    try:
        cfg = RunConfig.model_validate(stored.config)
    except ValidationError as exc:
        raise GradprobeError(f"--resume: {format_validation_error(exc, RunConfig, 'config')}") from None
    data = load_dataset(cfg.data)
    preflight(cfg, data)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    ckpt = load_checkpoint(stored.path / CHECKPOINT)
    dropped = drop_later_parts(stored.path, ckpt.parts if ckpt is not None else {})
    log.info("resuming %s at step %d (%d part files after the checkpoint dropped)",
             stored.run_id, ckpt.step if ckpt else 0, dropped)
    writer = RunWriter.resume(root, stored.run_id)
    with writer:
        writer.update_meta(resumed_at_step=ckpt.step if ckpt else 0)
        trainer = Trainer(cfg, data, writer, progress)
        if ckpt is not None:
            trainer.restore(ckpt, load_run(stored.run_id, root).frame())
        return trainer.run()


__all__ = ["preflight", "prepare", "resume_run", "run_experiment", "run_one"]

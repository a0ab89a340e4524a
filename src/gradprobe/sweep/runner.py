"""Run a sweep's unfinished configurations locally, in worker processes or as Ray tasks.

Every executor hands out groups of configurations; whoever trains a group writes its runs to the
shared store itself (one run directory each, so workers never contend) and first skips any
configuration that already has a completed run there. That one check makes a re-run resume the
sweep and makes a retried Ray task redo only what its killed worker left unfinished.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.store.layout import resolve_store
from gradprobe.sweep.aggregate import finished_index
from gradprobe.sweep.grid import Sweep, SweepItem, config_hash
from gradprobe.train.config import RunConfig

log = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")
ENGINES = ("auto", "loop", "ensemble")
RAY_INSTALL = "pip install gradprobe[ray]"
SweepProgress = Callable[[float, int], None]  # (configurations done, possibly fractional; total)
Hook = Callable[[RunConfig], None]


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep."""

    executor: str = "local"  # local (sequential, in-process), process or ray
    workers: int = 2  # worker processes, or CPUs of a local Ray instance
    address: str | None = None  # Ray cluster to join ("auto": the one `ray start --head` started); None: new local
    engine: str = "loop"  # loop: one config at a time; ensemble: gradprobe.train.ensemble groups; auto: both
    group_size: int | None = None  # configs per task; None: 1 for process, n / (2 workers) for ray
    hook: Hook | None = None  # called in the worker before each config trains (instrumentation, tests)


@dataclass
class SweepOutcome:
    """What a sweep call did: runs it wrote, configs already done, and errors of failed groups."""

    ran: list[str] = field(default_factory=list)
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SweepTask:
    """One group of configurations for one worker (picklable)."""

    items: tuple[SweepItem, ...]
    store: str
    batch: str
    engine: str
    hook: Hook | None


def _check(options: SweepOptions) -> None:
    if options.executor not in EXECUTORS:
        raise GradprobeError(f"--executor: {options.executor!r} is not an executor; allowed: {', '.join(EXECUTORS)}")
    if options.engine not in ENGINES:
        raise GradprobeError(f"--engine: {options.engine!r} is not an engine; allowed: {', '.join(ENGINES)}")
    if options.workers < 1:
        raise GradprobeError(f"--workers: {options.workers!r} is not allowed; allowed: an integer >= 1")
    if options.group_size is not None and options.group_size < 1:
        raise GradprobeError(f"group_size: {options.group_size!r} is not allowed; allowed: an integer >= 1")


def _ensemble() -> Any:
    try:
        from gradprobe.train import ensemble
    except ImportError:
        raise GradprobeError("--engine: 'ensemble' needs gradprobe.train.ensemble, which this "
                             "installation lacks; allowed here: loop") from None
    return ensemble


def _groups(items: Sequence[SweepItem], engine: str, size: int) -> list[tuple[tuple[SweepItem, ...], str]]:
    """Split into tasks and their engines: chunks of ``size`` (loop) or the ensemble's trainable-together groups.

    Under ``auto`` a group the ensemble cannot train (see ``ensemble.loop_reason``) takes the loop.
    """
    if engine == "loop":
        return [(tuple(items[k:k + size]), "loop") for k in range(0, len(items), size)]
    _ensemble()  # its one-line error where this installation lacks the ensemble engine
    from gradprobe.sweep.groups import can_ensemble, group_configs

    by_hash = {i.config_hash: i for i in items}
    tasks = []
    for group in group_configs([i.config for i in items]):
        chosen = "loop" if engine == "auto" and not can_ensemble(group) else "ensemble"
        tasks.append((tuple(by_hash[config_hash(c.model_dump(mode="json"))] for c in group), chosen))
    return tasks


def _train_loop(task: SweepTask, items: list[SweepItem], data: Dataset,
                progress: Callable[[int, int], None] | None) -> list[str]:
    from gradprobe.train.runner import run_one

    ids = []
    for item in items:
        if task.hook is not None:
            task.hook(item.config)
        ids.append(str(run_one(item.config, Path(task.store), data, progress, task.batch).run_id))
    return ids


def _train_ensemble(task: SweepTask, items: list[SweepItem], data: Dataset) -> list[str]:
    for item in items:
        if task.hook is not None:
            task.hook(item.config)
    results = _ensemble().train_group([i.config for i in items], data, Path(task.store), batch=task.batch)
    return [str(r.run_id) for r in results]


def train_task(task: SweepTask, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Train the group's configurations that have no completed run yet; return the new run ids.

    Configurations are grouped by data set so each is loaded once. ``progress(steps, total)`` is
    passed to the loop engine's runs.
    """
    done = finished_index(task.store)
    todo = [i for i in task.items if i.config_hash not in done]
    by_data: dict[str, list[SweepItem]] = {}
    for item in todo:
        by_data.setdefault(item.config.data.model_dump_json(), []).append(item)
    ids: list[str] = []
    for items in by_data.values():
        data = load_dataset(items[0].config.data)
        if task.engine == "ensemble":
            ids += _train_ensemble(task, items, data)
        else:
            ids += _train_loop(task, items, data, progress)
    return ids


def _run_local(tasks: list[SweepTask], progress: SweepProgress, total: int, outcome: SweepOutcome) -> None:
    done = 0
    for task in tasks:
        def step(steps: int, of: int, start: int = done, single: bool = len(task.items) == 1) -> None:
            # Within a group of one config: the fraction of its steps; larger groups report per group.
            if single and of:
                progress(start + steps / of, total)

        try:
            outcome.ran += train_task(task, step)
        except Exception as exc:  # noqa: BLE001  # one failed group does not stop the sweep
            log.warning("sweep group %s failed: %s", task.items[0].point, exc)
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
        done += len(task.items)
        progress(done, total)


def _run_process(tasks: list[SweepTask], options: SweepOptions, progress: SweepProgress, total: int,
                 outcome: SweepOutcome) -> None:
    done = 0
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    with cf.ProcessPoolExecutor(max_workers=options.workers, mp_context=context) as pool:
        futures = {pool.submit(train_task, task): task for task in tasks}
        for future in cf.as_completed(futures):
            try:
                outcome.ran += future.result()
            except Exception as exc:  # noqa: BLE001  # includes a worker killed mid-task
                outcome.errors.append(f"{type(exc).__name__}: {exc}")
            done += len(futures[future].items)
            progress(done, total)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GradprobeError(f"--executor: 'ray' needs the ray package; install it with: {RAY_INSTALL}") from None
    return ray


def _ray_task(task: SweepTask) -> list[str]:
    return train_task(task)


def _run_ray(tasks: list[SweepTask], options: SweepOptions, progress: SweepProgress, total: int,
             outcome: SweepOutcome) -> None:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started and options.address:
        try:
            ray.init(address=options.address, log_to_driver=False)
        except ConnectionError as exc:
            raise GradprobeError(f"--address: {options.address!r}: no Ray cluster there ({exc}); start one "
                                 "with 'ray start --head' or leave --address out for a local instance") from None
    elif started:
        ray.init(address="local", num_cpus=options.workers, include_dashboard=False, log_to_driver=False)
    try:
        # A task whose worker dies is re-submitted (max_retries); so is one that raised.
        remote = ray.remote(max_retries=3, retry_exceptions=True, num_cpus=1)(_ray_task)
        pending = {remote.remote(task): task for task in tasks}
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                outcome.ran += ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001  # retries exhausted
                outcome.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            done += len(task.items)
            progress(done, total)
    finally:
        if started:
            ray.shutdown()


def run_sweep(sweep: Sweep, store: str | os.PathLike[str] | None, options: SweepOptions = SweepOptions(),
              progress: SweepProgress | None = None) -> SweepOutcome:
    """Train every configuration of ``sweep`` that has no completed run in ``store``.

    Args:
        sweep: from ``load_sweep`` or ``expand``.
        store: run store root (None: ``$GRADPROBE_STORE`` or ``./gradprobe-runs``).
        options: executor, workers, Ray address, engine, group size, hook.
        progress: called with (configurations done, total) over the whole sweep.

    Returns:
        The new run ids, how many configurations were already done, and errors of failed groups.

    Raises:
        GradprobeError: on bad options, or ``ray`` requested but not installed.
    """
    _check(options)
    if options.executor == "ray":
        _import_ray()
    root = str(resolve_store(store))
    done = finished_index(root)
    todo = [i for i in sweep.items if i.config_hash not in done]
    outcome = SweepOutcome(skipped=len(sweep.items) - len(todo))
    report = progress or (lambda done, total: None)
    report(0, len(todo))
    if not todo:
        return outcome
    size = options.group_size or (1 if options.executor != "ray"
                                  else math.ceil(len(todo) / (2 * options.workers)))
    tasks = [SweepTask(group, root, sweep.sweep_id, engine, options.hook)
             for group, engine in _groups(todo, options.engine, size)]
    if options.executor == "local":
        _run_local(tasks, report, len(todo), outcome)
    elif options.executor == "process":
        _run_process(tasks, options, report, len(todo), outcome)
    else:
        _run_ray(tasks, options, report, len(todo), outcome)
    log.info("sweep %s: %d runs written, %d skipped, %d failed groups", sweep.sweep_id,
             len(outcome.ran), outcome.skipped, len(outcome.errors))
    return outcome


__all__ = ["ENGINES", "EXECUTORS", "RAY_INSTALL", "SweepOptions", "SweepOutcome", "SweepTask", "run_sweep",
           "train_task"]

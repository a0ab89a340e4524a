"""Train same-shaped configurations together: one batched computation for many seeds, activations and inits.

Members of a group share the data, widths, optimizer, training schedule and record settings; they
may differ in seed, elementwise activation, weight init, output init and bias init. Each member
gets the run directory, statistics and summary that ``runner.run_one`` would give it (tests
compare the two); anything else (maxout, linear, checkpointing, user models) takes the one-model loop.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gradprobe.data.datasets import Dataset
from gradprobe.errors import GradprobeError
from gradprobe.models.activations import activation_spec
from gradprobe.store.layout import new_run_id
from gradprobe.store.writer import RunWriter
from gradprobe.train.config import RunConfig
from gradprobe.train.ensemble_kernels import supported
from gradprobe.train.ensemble_loop import EnsembleTrainer
from gradprobe.train.env import open_run
from gradprobe.train.experiment import Experiment
from gradprobe.train.loop import Progress, RunResult
from gradprobe.train.runner import prepare, run_one

ENGINES = ("auto", "loop", "ensemble")
# Fields a member may change without changing any tensor shape or the training schedule.
_FREE = ("experiment", "arm", "arm_index", "seed")
_FREE_MODEL = ("activation", "init", "output_init", "bias_init", "hidden", "depth", "width")


def ensemble_key(cfg: RunConfig) -> str:
    """What members of one ensemble share: the config without the fields a member may change (JSON)."""
    raw = cfg.model_dump(mode="json")
    for name in _FREE:
        raw.pop(name)
    for name in _FREE_MODEL:
        raw["model"].pop(name)
    raw["model"]["widths"] = cfg.model.widths()
    return json.dumps(raw, sort_keys=True)


def loop_reason(cfg: RunConfig) -> str | None:
    """Why only the one-model loop trains ``cfg`` (maxout, linear, checkpointing), or None if the ensemble can."""
    if not supported(activation_spec(cfg.model.activation)):
        return f"model.activation {cfg.model.activation!r} has no ensemble kernel"
    if cfg.train.checkpoint_every is not None:
        return "train.checkpoint_every is set and only the loop writes checkpoints"
    if cfg.record.nan_guard or cfg.record.sharpness_every or cfg.record.snr_every:
        return "record.nan_guard, sharpness_every or snr_every is set and only the loop records them"
    return None


def pick_engine(engine: str, cfgs: list[RunConfig], live_sinks: Sequence[str] = ()) -> tuple[str, str | None]:
    """Resolve ``--engine`` (auto, loop or ensemble) for ``cfgs``; with it, one line saying why auto used the loop.

    ``auto`` is the ensemble (which trains each config it cannot group with the loop) unless live
    sinks are asked for (``live_sinks``: their options, e.g. ``["--tensorboard"]``), which only the loop feeds.

    Raises:
        GradprobeError: for an unknown engine, or ``ensemble`` forced with live sinks.
    """
    if engine not in ENGINES:
        raise GradprobeError(f"--engine: {engine!r} is not an engine; allowed: {', '.join(ENGINES)}")
    if engine == "ensemble" and live_sinks:
        raise GradprobeError(f"--engine: 'ensemble' cannot log live to {', '.join(live_sinks)}; use --engine loop"
                             + (", or export afterwards with 'gradprobe export tensorboard'"
                                if list(live_sinks) == ["--tensorboard"] else ""))
    if engine != "auto":
        return engine, None
    if live_sinks:
        return "loop", f"engine: loop, because {', '.join(live_sinks)} log live only from the loop engine"
    reasons = [r for r in map(loop_reason, cfgs) if r is not None]
    if not reasons:
        return "ensemble", None
    counts = ", ".join(f"{why} ({reasons.count(why)} runs)" for why in dict.fromkeys(reasons))
    chosen = "loop" if len(reasons) == len(cfgs) else "ensemble"
    return chosen, f"engine: loop for {len(reasons)} of {len(cfgs)} runs: {counts}"


def train_group(cfgs: list[RunConfig], data: Dataset, store: Path | None, batch: str | None = None,
                progress: Progress | None = None) -> list[RunResult]:
    """Train a group together; one RunResult (and, with a store, one run directory) per config, in order.

    Args:
        cfgs: configurations for which ``sweep.groups.can_ensemble`` holds.
        data: the data set they share.
        store: run store root, or None to keep results in memory only.
        batch: the invocation id stored in every run's meta (as ``run_one`` does).
        progress: called with (steps done, total steps) of the group.

    Returns:
        What ``runner.run_one`` returns for each config; ``summary["seconds"]`` is the group's
        wall time divided by its size.

    Raises:
        GradprobeError: if the configs cannot be trained as one group.
    """
    from gradprobe.sweep.groups import can_ensemble  # the grouping lives with the sweep, which imports this

    if not can_ensemble(cfgs):
        raise GradprobeError(
            "train_group: these configs cannot be trained together; allowed: the same data, widths, "
            "optimizer, train and record settings, elementwise activations (no maxout or linear), no checkpoints")
    order = sorted(range(len(cfgs)), key=lambda i: str(activation_spec(cfgs[i].model.activation)))
    members = [cfgs[i] for i in order]  # equal activations side by side: one op per distinct activation
    if members[0].train.threads is not None:
        torch.set_num_threads(members[0].train.threads)
    with contextlib.ExitStack() as stack:
        writers: list[RunWriter | None] = [None] * len(members)
        if store is not None:
            writers = [stack.enter_context(open_run(store, new_run_id(c.experiment, c.arm, c.seed), c, batch))
                       for c in members]
        results = EnsembleTrainer(members, data, writers, progress).run()
    by_input = dict(zip(order, results))
    return [by_input[i] for i in range(len(cfgs))]


def run_experiment_ensembled(exp: Experiment, store: Path | None,
                             progress: Callable[[RunConfig], Progress | None] | None = None) -> list[RunResult]:
    """``runner.run_experiment`` with every group that can be ensembled trained as one; results in run order."""
    from gradprobe.sweep.groups import can_ensemble, group_configs

    cache = prepare(exp)  # every run checked before the first group trains
    batch = new_run_id(exp.name, "batch", None)
    done: dict[int, RunResult] = {}
    index = {id(c): i for i, c in enumerate(exp.runs)}
    for group in group_configs(exp.runs):
        key = group[0].data.model_dump_json()
        if can_ensemble(group):
            bars = [progress(c) for c in group] if progress else []

            def tell(done_steps: int, total: int, bars: list[Progress | None] = bars) -> None:
                for bar in bars:
                    if bar is not None:
                        bar(done_steps, total)

            results = train_group(group, cache[key], store, batch, tell)
        else:
            results = [run_one(c, store, cache[key], progress(c) if progress else None, batch) for c in group]
        done.update({index[id(c)]: r for c, r in zip(group, results)})
    return [done[i] for i in range(len(exp.runs))]


__all__ = ["ENGINES", "ensemble_key", "loop_reason", "pick_engine", "run_experiment_ensembled", "train_group"]

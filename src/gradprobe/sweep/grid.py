"""Grid axes (``depth=2,4,8``) and the expansion of an experiment into arms x grid points x seeds."""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gradprobe.errors import GradprobeError
from gradprobe.store.layout import sanitize_run_id
from gradprobe.train.config import RunConfig
from gradprobe.train.experiment import (
    Experiment,
    format_validation_error,
    load_experiment,
    read_source,
)

#: Short axis names and the RunConfig field each one sets.
SHORT_AXES: dict[str, str] = {
    "activation": "model.activation",
    "depth": "model.depth",
    "width": "model.width",
    "init": "model.init",
    "lr": "optimizer.lr",
    "optimizer": "optimizer.name",
    "batch_size": "train.batch_size",
}
# Identity of a run, set by the expansion itself: never a grid axis.
_FIXED = ("experiment", "arm", "seed")


@dataclass(frozen=True)
class Axis:
    """One grid axis: a dotted RunConfig path, its label as the user wrote it, and its values."""

    path: str
    label: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SweepItem:
    """One configuration of a sweep: an arm at a grid point with one seed."""

    config: RunConfig
    point: str  # grid point id, e.g. "depth=4,init=he_normal" ("" without a grid)
    values: dict[str, Any]  # axis path -> value at this point
    config_hash: str  # sha256 of the canonical JSON of the config

    @property
    def group(self) -> tuple[str, str]:
        """What aggregation pools over seeds: (arm, grid point)."""
        return (self.config.arm, self.point)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its id, axes and every configuration, in arm x point x seed order."""

    sweep_id: str
    experiment: Experiment
    axes: tuple[Axis, ...]
    items: tuple[SweepItem, ...]


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of a RunConfig dump (``model_dump(mode="json")`` or a stored ``run.json`` config).

    Keys are sorted and separators fixed, so the same settings give the same hash whether they
    come from a fresh expansion or from a run read back from the store.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``[8,8],[16,16]`` is two values."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _parse_value(text: str) -> Any:
    """YAML-parse one value; ``1e-3`` (a string in YAML 1.1) becomes a float."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_path(path: str, label: str) -> None:
    """Raise unless ``path`` names a RunConfig field (through nested sections)."""
    parts = path.split(".")
    model: type[BaseModel] = RunConfig
    for i, part in enumerate(parts):
        fields = [f for f in model.model_fields if i or f not in _FIXED]
        if part in _FIXED and not i:
            raise GradprobeError(f"--grid {label}: {part!r} is set by the sweep itself, not a grid axis; "
                                 "use --seeds N (seeds) or the experiment's arms")
        if part not in fields:
            allowed = fields + ([] if i else [*SHORT_AXES])
            hint = difflib.get_close_matches(part, allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise GradprobeError(f"--grid {label}: {part!r} is not a field of "
                                 f"{'.'.join(parts[:i]) or 'the run config'}; allowed: {', '.join(allowed)}{extra}")
        annotation = model.model_fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise GradprobeError(f"--grid {label}: {'.'.join(parts[:i + 1])} is a value, not a section")
            model = annotation


def make_axis(label: str, values: Sequence[Any]) -> Axis:
    """An axis from a short name or dotted path and its values.

    Raises:
        GradprobeError: on an unknown field, no values, or a repeated value.
    """
    label = label.strip()
    path = SHORT_AXES.get(label, label)
    _check_path(path, label)
    if not values:
        raise GradprobeError(f"--grid {label}: no values; e.g. --grid {label}=a,b")
    seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
    if len(set(seen)) != len(seen):
        raise GradprobeError(f"--grid {label}: {list(values)!r} repeats a value; give each value once")
    return Axis(path, label, tuple(values))


def parse_axis(item: str) -> Axis:
    """Parse ``name=v1,v2,...`` (short name or dotted RunConfig path; values YAML-parsed).

    Raises:
        GradprobeError: if the item is not NAME=VALUES or names no RunConfig field.
    """
    name, sep, text = item.partition("=")
    if not sep or not name.strip() or not text.strip():
        raise GradprobeError(f"--grid: {item!r} is not NAME=V1,V2,...; e.g. --grid depth=2,4,8")
    return make_axis(name, [_parse_value(v) for v in _split_values(text) if v])


def _file_axes(grid: Any, origin: str) -> list[Axis]:
    """Axes of a config file's top-level ``grid:`` mapping (axis -> list of values)."""
    if not isinstance(grid, dict):
        raise GradprobeError(f"{origin}: grid: must be a mapping of axis -> list of values, "
                             f"got {type(grid).__name__}")
    axes = []
    for label, values in grid.items():
        if not isinstance(values, list):
            raise GradprobeError(f"{origin}: grid.{label}: {values!r} is not a list; e.g. [2, 4, 8]")
        axes.append(make_axis(str(label), values))
    return axes


def _experiment_from_mapping(raw: dict[str, Any], sets: list[str], seeds: int | None) -> Experiment:
    """Adapter until ``load_experiment`` accepts a mapping: validate it through a temporary YAML file."""
    with tempfile.TemporaryDirectory(prefix="gradprobe-sweep-") as tmp:
        path = Path(tmp) / "experiment.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_experiment(str(path), sets, seeds)


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = target
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = copy.deepcopy(value)


def _point_id(axes: Sequence[Axis], combo: Sequence[Any]) -> str:
    return ",".join(f"{a.label}={json.dumps(v) if not isinstance(v, str) else v}" for a, v in zip(axes, combo))


def _validate_point(base: RunConfig, axes: Sequence[Axis], combo: Sequence[Any]) -> RunConfig:
    raw = base.model_dump(mode="json")
    for axis, value in zip(axes, combo):
        _put(raw, axis.path, value)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        where = _point_id(axes, combo)
        raise GradprobeError(f"grid point {where} (arm {base.arm!r}): "
                             f"{format_validation_error(exc, RunConfig)}") from None


def expand(exp: Experiment, axes: Sequence[Axis]) -> Sweep:
    """Every arm x grid point x seed of ``exp``, each RunConfig validated before anything runs.

    Raises:
        GradprobeError: one line for the first invalid grid point, or two axes on one field.
    """
    paths = [a.path for a in axes]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise GradprobeError(f"--grid {dup}: given twice; give each axis once")
    by_arm: dict[str, list[RunConfig]] = {}
    for run in exp.runs:  # arm-major, seeds inside
        by_arm.setdefault(run.arm, []).append(run)
    items = []
    for runs in by_arm.values():
        for combo in itertools.product(*(a.values for a in axes)):
            for base in runs:
                cfg = _validate_point(base, axes, combo)
                items.append(SweepItem(cfg, _point_id(axes, combo), dict(zip(paths, combo)),
                                       config_hash(cfg.model_dump(mode="json"))))
    digest = hashlib.sha256("".join(sorted(i.config_hash for i in items)).encode()).hexdigest()[:10]
    sweep_id = f"sweep-{sanitize_run_id(exp.name)[:48]}-{digest}"
    return Sweep(sweep_id, exp, tuple(axes), tuple(items))


def load_sweep(source: str, grid: Sequence[str] = (), sets: Sequence[str] = (),
               seeds: int | None = None) -> Sweep:
    """Read a preset or file, its ``grid:`` and ``grid`` items from the command line, and expand it.

    Command-line axes replace file axes on the same field.

    Raises:
        GradprobeError: on any invalid axis, value, override or grid point (nothing has run).
    """
    raw = read_source(source)
    file_grid = raw.pop("grid", None)
    exp = (_experiment_from_mapping(raw, list(sets), seeds) if file_grid is not None
           else load_experiment(source, list(sets), seeds))
    if exp.config.kind != "train":
        raise GradprobeError(f"experiment: {exp.name!r} is kind {exp.config.kind!r}; "
                             "only kind 'train' experiments can be swept")
    cli_axes = [parse_axis(item) for item in grid]
    cli_paths = {a.path for a in cli_axes}
    axes = [a for a in _file_axes(file_grid, source) if a.path not in cli_paths] if file_grid is not None else []
    return expand(exp, axes + cli_axes)


__all__ = ["SHORT_AXES", "Axis", "Sweep", "SweepItem", "config_hash", "expand", "load_sweep",
           "make_axis", "parse_axis"]

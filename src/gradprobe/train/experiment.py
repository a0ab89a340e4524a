"""Load an experiment (shipped preset or user file), apply ``--set`` overrides and expand arms x seeds."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from gradprobe.errors import GradprobeError
from gradprobe.models.inits import init_spec
from gradprobe.presets import preset_names, read_source
from gradprobe.train.config import ExperimentConfig, RunConfig

SECTIONS = ("data", "model", "optimizer", "train", "record")
_RUN_ONLY = ("device",)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: its settings and one RunConfig per arm and seed."""

    config: ExperimentConfig
    runs: list[RunConfig]

    @property
    def name(self) -> str:
        return self.config.name


def _show(text: str) -> str:
    """User text for a one-line message: as is if printable, else quoted with escapes."""
    return text if text.isprintable() else repr(text)


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(p.strip() for p in path):
        raise GradprobeError(f"--set: {item!r} is not KEY=VALUE; e.g. --set optimizer.lr=0.01")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return [p.strip() for p in path], value


def _put(target: dict[str, Any], path: list[str], value: Any, label: str) -> None:
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise GradprobeError(f"--set: {_show(label)}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


# Keys that describe the same thing: setting one drops the others inherited from the base or arm.
_EXCLUSIVE = {("model", "hidden"): (("model", "depth"), ("model", "width")),
              ("model", "depth"): (("model", "hidden"),), ("model", "width"): (("model", "hidden"),)}


def _drop_exclusive(target: dict[str, Any], path: list[str], explicit: set[tuple[str, ...]]) -> None:
    for other in _EXCLUSIVE.get(tuple(path), ()):  # type: ignore[arg-type]
        section = target.get(other[0])
        if isinstance(section, dict) and other not in explicit:
            section.pop(other[1], None)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown_key_message(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Unknown key at ``loc``: list what the enclosing section allows and suggest the closest."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            cls = annotation
    allowed = list(cls.model_fields)
    hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown key; allowed: {', '.join(allowed)}{extra}"


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line naming the field, the value and what is allowed, from pydantic's first error."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = _show(".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(loc)))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{field}: {_unknown_key_message(model, loc)}"
    head = msg.split(":", 1)[0].strip()
    if field and (head == field or head.startswith(f"{field}.") or msg.startswith(f"{field} ")):
        return msg  # our own validators already name the field
    if loc and head == str(loc[-1]):
        return f"{field}: {msg.split(':', 1)[1].strip()}"
    return f"{field}: {err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"


def _numeric(annotation: Any) -> bool:
    """Whether a field annotation takes numbers (int, float, or a union/list/tuple of them)."""
    if annotation in (int, float):
        return True
    return any(_numeric(arg) for arg in get_args(annotation) if arg is not type(None))


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The config model a (possibly optional) annotation holds, if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _refuse_bools(model: type[BaseModel], raw: dict[str, Any], prefix: str = "") -> None:
    """Refuse true/false where a number belongs (pydantic would silently read them as 1 and 0)."""
    for key, value in raw.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        name = f"{prefix}{key}"
        items = value if isinstance(value, (list, tuple)) else [value]
        if _numeric(field.annotation) and any(isinstance(v, bool) for v in items):
            raise GradprobeError(f"{name}: {value!r} is not allowed; give a number, not true/false")
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(value, dict):
            _refuse_bools(sub, value, f"{name}.")


def _validate(model: type[BaseModel], raw: dict[str, Any], prefix: str = "") -> Any:
    _refuse_bools(model, raw, f"{prefix}." if prefix else "")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise GradprobeError(format_validation_error(exc, model, prefix)) from None


def load_experiment(source: str, sets: list[str] | None = None, seeds: int | None = None) -> Experiment:
    """Validate ``source`` with ``--set`` overrides; every error is a one-line GradprobeError.

    Overrides of data/model/optimizer/train/record/device apply to every arm after the arm's own
    settings; ``seeds``, ``seed``, ``name``, ``decay.*`` apply to the experiment.
    """
    raw = read_source(source)
    run_sets: list[tuple[list[str], Any, str]] = []
    for item in sets or []:
        path, value = parse_set(item)
        if path[0] in SECTIONS or path[0] in _RUN_ONLY:
            run_sets.append((path, value, item))
        elif path[0] in ExperimentConfig.model_fields:
            _put(raw, path, value, item)
        else:
            allowed = list(ExperimentConfig.model_fields)
            hint = difflib.get_close_matches(path[0], allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise GradprobeError(f"--set {_show(path[0])}: unknown key; allowed: {', '.join(allowed)}{extra}")
    if seeds is not None:
        raw["seeds"] = seeds
    exp = _validate(ExperimentConfig, raw)
    names = [arm.get("name") for arm in exp.arms]
    if any(not isinstance(n, str) or not n for n in names):
        raise GradprobeError("arms: every arm needs a non-empty 'name'")
    if len(set(names)) != len(names):
        raise GradprobeError(f"arms: names must be unique, got {names}")
    base = {k: getattr(exp, k) for k in SECTIONS + _RUN_ONLY}
    runs = []
    explicit = {tuple(path) for path, _, _ in run_sets}
    for index, arm in enumerate(exp.arms):
        arm_over = {k: v for k, v in arm.items() if k != "name"}
        merged = _merge(base, arm_over)
        for key in arm_over.get("model", {}) if isinstance(arm_over.get("model"), dict) else ():
            _drop_exclusive(merged, ["model", key], {("model", k) for k in arm_over["model"]})
        for path, value, label in run_sets:
            _put(merged, path, copy.deepcopy(value), label)
            _drop_exclusive(merged, path, explicit)
        for seed in range(exp.seed, exp.seed + exp.seeds):
            runs.append(_validate(RunConfig, {**merged, "experiment": exp.name, "arm": arm["name"],
                                              "arm_index": index, "seed": seed}))
    _check_legacy_stream(runs)
    return Experiment(exp, runs)


def _check_legacy_stream(runs: list[RunConfig]) -> None:
    """A ``cs231n`` init draws after the earlier arms' weights, so every arm must draw the same shapes from it."""
    legacy = [r for r in runs
              if any(s is not None and init_spec(s).legacy for s in (r.model.init, r.model.output_init))]
    if not legacy:
        return
    first, drawing = legacy[0], {id(r) for r in legacy}
    for run in runs:
        same = id(run) in drawing and run.model.widths() == first.model.widths() and run.data == first.data
        if not same:
            raise GradprobeError(
                f"model.init: {first.model.init!r} (arm {first.arm!r}) draws after the earlier arms' weights from one "
                f"stream, but arm {run.arm!r} has init {run.model.init!r}, widths {run.model.widths()}; allowed: "
                "every arm with a cs231n init, the same widths and data")


__all__ = ["Experiment", "format_validation_error", "load_experiment", "parse_set", "preset_names", "read_source"]

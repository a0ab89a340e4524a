"""Property-based fuzzing of config parsing: every input is accepted or refused with one clean line."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradprobe.data.config import DataConfig
from gradprobe.errors import GradprobeError
from gradprobe.models.config import ModelConfig
from gradprobe.train.config import (
    ExperimentConfig,
    OptimizerConfig,
    RecordConfig,
    RunConfig,
    TrainConfig,
)
from gradprobe.train.experiment import Experiment, load_experiment

MAPPING_EXAMPLES = 1000
SET_EXAMPLES = 1000
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig, "train": TrainConfig,
            "record": RecordConfig}
FUZZ = settings(max_examples=MAPPING_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Plausible values first (names the fields accept), then anything YAML can hold.
WORDS = ["sigmoid", "tanh", "relu", "maxout:2", "leaky_relu:-1", "normal:1", "normal:-1", "he_normal",
         "orthogonal:0", "adam", "sgd", "lbfgs", "circles", "spiral", "mnist", "cifar", "epoch", "auto", "bce",
         "cuda", "cpu", "meta", "", " ", "../../x", "/etc/passwd", "a\x00b", "mean", "nonfinite", "decay"]
leaf = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-3, max_value=5), st.integers(), st.integers(min_value=2**31, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS), st.text(max_size=12),
)
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _section(model: type) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(list(model.model_fields)) | st.text(max_size=8)
    return st.dictionaries(keys, value, max_size=4)


sections = st.fixed_dictionaries({}, optional={name: _section(m) | value for name, m in SECTIONS.items()})
top_keys = st.sampled_from([k for k in ExperimentConfig.model_fields if k not in SECTIONS]) | st.text(max_size=8)
arms = st.lists(st.one_of(st.fixed_dictionaries({"name": st.text(max_size=6) | value}, optional={
    name: _section(m) for name, m in SECTIONS.items()}), value), max_size=3)
mappings = st.builds(lambda s, top, a: {**s, **top, **a}, sections,
                     st.dictionaries(top_keys, value, max_size=3),
                     st.fixed_dictionaries({}, optional={"arms": arms}))

_field_paths = [f"{name}.{field}" for name, m in SECTIONS.items() for field in m.model_fields]
_field_paths += [k for k in ExperimentConfig.model_fields if k not in SECTIONS] + ["device", "decay.steps"]
set_strings = st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_field_paths) | st.text(max_size=10),
              st.text(max_size=12) | st.sampled_from(WORDS) | value.map(lambda v: yaml.safe_dump(
                  v, default_flow_style=True).strip())),
)


def _check_outcome(call: Any) -> str:
    """Run ``call``; it must return an Experiment or raise one single-line GradprobeError."""
    try:
        exp = call()
    except GradprobeError as exc:
        message = str(exc)
        assert message and "\n" not in message and ":" in message, message
        return "refused"
    assert isinstance(exp, Experiment)
    for cfg in exp.runs:  # what a run stores must read back the same (resume depends on it)
        assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    return "accepted"


def test_random_config_files_are_accepted_or_refused_cleanly() -> None:
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"

        @FUZZ
        @given(raw=mappings)
        def check(raw: dict[str, Any]) -> None:
            path.write_text(yaml.safe_dump(raw, allow_unicode=True))
            outcomes[_check_outcome(lambda: load_experiment(str(path)))] += 1

        check()
    print("fuzz outcomes", outcomes)
    assert sum(outcomes.values()) >= MAPPING_EXAMPLES * 0.9, outcomes
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes  # both paths were exercised


def test_random_set_strings_are_accepted_or_refused_cleanly() -> None:
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}

    @settings(FUZZ, max_examples=SET_EXAMPLES)
    @given(sets=st.lists(set_strings, min_size=1, max_size=3))
    def check(sets: list[str]) -> None:
        outcomes[_check_outcome(lambda: load_experiment("circles-shallow", sets))] += 1

    check()
    print("fuzz outcomes", outcomes)
    assert sum(outcomes.values()) >= SET_EXAMPLES * 0.9, outcomes
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes

"""``--engine auto`` (the default) trains with the ensemble where it can and says once why it used the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from gradprobe.cli.main import app
from gradprobe.errors import GradprobeError
from gradprobe.train.ensemble import pick_engine
from gradprobe.train.ensemble_loop import EnsembleTrainer
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer

SHORT = ["--set", "train.epochs=1", "--set", "data.n_samples=100", "--no-report"]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which engine's ``run`` trains each group or run."""
    calls: list[str] = []
    for name, cls in (("ensemble", EnsembleTrainer), ("loop", Trainer)):
        def wrapped(self: Any, _original: Callable[..., Any] = cls.run, _name: str = name) -> Any:
            calls.append(_name)
            return _original(self)
        monkeypatch.setattr(cls, "run", wrapped)
    return calls


def test_auto_trains_circles_deep_with_the_ensemble_silently(monkeypatch, tmp_path):
    calls = _spy(monkeypatch)
    res = CliRunner().invoke(app, ["run", "circles-deep", *SHORT, "--store", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls == ["ensemble"]  # the three arms in one group
    assert "engine:" not in res.output


def test_auto_falls_back_to_the_loop_and_says_why_once(monkeypatch, tmp_path):
    calls = _spy(monkeypatch)
    res = CliRunner().invoke(app, ["run", "circles-deep", *SHORT, "--set", "train.checkpoint_every=2",
                                   "--store", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls == ["loop"] * 3
    lines = [line for line in res.output.splitlines() if line.startswith("engine:")]
    assert lines == ["engine: loop for 3 of 3 runs: train.checkpoint_every is set and only the loop writes "
                     "checkpoints (3 runs)"]


def test_forced_engines_and_tensorboard():
    runs = load_experiment("circles-deep", [], None).runs
    assert pick_engine("loop", runs) == ("loop", None)
    assert pick_engine("ensemble", runs) == ("ensemble", None)
    engine, note = pick_engine("auto", runs, live_sinks=["--tensorboard"])
    assert engine == "loop" and note is not None and "--tensorboard" in note
    with pytest.raises(GradprobeError, match="--tensorboard"):
        pick_engine("ensemble", runs, live_sinks=["--tensorboard"])
    with pytest.raises(GradprobeError, match="allowed: auto, loop, ensemble"):
        pick_engine("fast", runs)


def test_auto_names_an_activation_without_a_kernel(monkeypatch):
    runs = load_experiment("circles-deep", [], None).runs
    monkeypatch.setattr("gradprobe.train.ensemble.supported", lambda spec: str(spec) != "relu")
    engine, note = pick_engine("auto", runs)
    assert engine == "ensemble"
    assert note == "engine: loop for 1 of 3 runs: model.activation 'relu' has no ensemble kernel (1 runs)"

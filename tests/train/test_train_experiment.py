"""Experiment loading: presets, arms, --set overrides, seeds, and one-line errors."""

from __future__ import annotations

import pytest

from gradprobe.errors import GradprobeError
from gradprobe.train.experiment import load_experiment, parse_set, preset_names


def test_every_preset_validates():
    assert set(preset_names()) >= {"mnist-deep", "circles-shallow", "circles-deep", "circles-glorot",
                                    "spiral", "sigmoid-decay"}
    for name in preset_names():
        exp = load_experiment(name)
        assert exp.name == name
        assert exp.runs or exp.config.kind == "decay"


def test_circles_deep_arms_and_seeds():
    exp = load_experiment("circles-deep", seeds=3)
    assert [(r.arm, r.seed) for r in exp.runs] == [(a, s) for a in ("sigmoid", "tanh", "relu") for s in (0, 1, 2)]
    r = exp.runs[0]
    assert (r.model.depth, r.model.width, r.model.init, r.optimizer.name) == (4, 5, "normal:1", "rmsprop")
    assert r.train.batch_size == 32 and r.train.epochs == 100


def test_set_overrides_apply_after_arms():
    exp = load_experiment("circles-deep", ["optimizer.lr=0.01", "model.activation=elu", "train.epochs=3",
                                           "model.hidden=[3, 4]", "seeds=2"])
    assert {r.optimizer.lr for r in exp.runs} == {0.01}
    assert {r.model.activation for r in exp.runs} == {"elu"}  # --set wins over the arm's own value
    assert exp.runs[0].model.hidden == [3, 4] and len(exp.runs) == 6


@pytest.mark.parametrize(("sets", "needle"), [
    (["optimizer.lrr=0.1"], "did you mean 'lr'"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["model.depth=0"], "model.depth"),
    (["model.activation=sigmod"], "did you mean 'sigmoid'"),
    (["model.init=glorot"], "model.init"),
    (["optimizer.name=adagrad"], "optimizer.name"),
    (["data.name=mnits"], "data.name"),
    (["data.noise=-0.5"], "data.noise"),
    (["seeds=0"], "seeds"),
    (["train.epochs=5", "train.iterations=5"], "conflict"),
    (["modle.depth=3"], "did you mean 'model'"),
    (["lr"], "KEY=VALUE"),
])
def test_bad_values_give_one_line_errors(sets, needle):
    with pytest.raises(GradprobeError) as info:
        load_experiment("circles-deep", sets)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_unknown_source_suggests_preset(tmp_path):
    with pytest.raises(GradprobeError, match="did you mean 'circles-deep'"):
        load_experiment("circles-dep")
    bad = tmp_path / "x.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(GradprobeError, match="mapping"):
        load_experiment(str(bad))


def test_user_file_runs_the_same_way(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndata: {name: xor, n_samples: 64}\nmodel: {hidden: [4]}\n"
                    "train: {epochs: 2}\narms: [{name: a}, {name: b, model: {activation: tanh}}]\n")
    exp = load_experiment(str(path))
    assert [r.arm for r in exp.runs] == ["a", "b"] and exp.runs[1].model.activation == "tanh"


def test_parse_set_types():
    assert parse_set("optimizer.lr=1e-3") == (["optimizer", "lr"], 1e-3)
    assert parse_set("train.shuffle=false") == (["train", "shuffle"], False)
    assert parse_set("model.activation=leaky_relu:0.1") == (["model", "activation"], "leaky_relu:0.1")

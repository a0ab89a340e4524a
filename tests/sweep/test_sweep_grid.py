"""Axis parsing, file grids, expansion order, up-front validation and the config hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradprobe.cli.main import app
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import read_run_docs
from gradprobe.sweep import load_sweep, parse_axis, run_sweep
from gradprobe.sweep.grid import config_hash


@pytest.mark.parametrize(("item", "path", "values"), [
    ("activation=sigmoid,tanh,relu", "model.activation", ("sigmoid", "tanh", "relu")),
    ("depth=2,4,8,16", "model.depth", (2, 4, 8, 16)),
    ("width=3", "model.width", (3,)),
    ("init=normal:1,glorot_uniform,he_normal", "model.init", ("normal:1", "glorot_uniform", "he_normal")),
    ("lr=1e-3,0.01", "optimizer.lr", (0.001, 0.01)),
    ("optimizer=sgd,adam", "optimizer.name", ("sgd", "adam")),
    ("batch_size=16, null", "train.batch_size", (16, None)),
    ("model.bias_init=0,0.1", "model.bias_init", (0, 0.1)),
    ("model.hidden=[8,8],[16]", "model.hidden", ([8, 8], [16])),
    ("train.shuffle=true,false", "train.shuffle", (True, False)),
    ("data.noise=0.05,0.2", "data.noise", (0.05, 0.2)),
])
def test_parse_axis_table(item: str, path: str, values: tuple) -> None:
    axis = parse_axis(item)
    assert axis.path == path
    assert axis.values == values
    assert [type(v) for v in axis.values] == [type(v) for v in values]


@pytest.mark.parametrize(("item", "fragment"), [
    ("depht=2,4", "did you mean 'depth'"),
    ("model.activaton=relu", "did you mean 'activation'"),
    ("seed=1,2", "--seeds"),
    ("depth", "NAME=V1,V2"),
    ("depth=2,2", "repeats"),
    ("model.depth.x=1", "is a value, not a section"),
])
def test_bad_axis_is_one_line(item: str, fragment: str) -> None:
    with pytest.raises(GradprobeError) as info:
        parse_axis(item)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_expansion_order_and_count(tiny: str) -> None:
    sweep = load_sweep(tiny, ["lr=0.01,0.1"])
    # 1 arm x (2 activations x 2 depths x 2 lrs) x 2 seeds, seeds innermost
    assert len(sweep.items) == 16
    first = sweep.items[:3]
    assert [(i.point, i.config.seed) for i in first] == [
        ("activation=sigmoid,depth=2,lr=0.01", 0), ("activation=sigmoid,depth=2,lr=0.01", 1),
        ("activation=sigmoid,depth=2,lr=0.1", 0)]
    assert {i.config.model.activation for i in sweep.items} == {"sigmoid", "tanh"}
    assert sorted({i.config.optimizer.lr for i in sweep.items}) == [0.01, 0.1]
    assert len({i.config_hash for i in sweep.items}) == 16


def test_command_line_axis_replaces_file_axis(tiny: str) -> None:
    sweep = load_sweep(tiny, ["depth=5"], ["train.epochs=1"], seeds=1)
    assert [i.config.model.depth for i in sweep.items] == [5, 5]
    assert all(i.config.train.epochs == 1 for i in sweep.items)


def test_preset_arms_times_grid() -> None:
    sweep = load_sweep("circles-deep", ["depth=2,3"], seeds=2)
    assert len(sweep.items) == 3 * 2 * 2
    assert [i.config.arm for i in sweep.items[:5]] == ["sigmoid"] * 4 + ["tanh"]


@pytest.mark.parametrize(("grid", "fragment"), [
    (["depth=3,0"], "model.depth: 0 is not a valid depth"),
    (["activation=tanh,nope"], "'nope' is not an activation"),
    (["lr=-1"], "optimizer.lr"),
    (["model.hidden=[4]"], "model.hidden"),  # conflicts with the file's depth + width
])
def test_invalid_point_writes_nothing(tiny: str, grid: list[str], fragment: str, tmp_path: Path) -> None:
    with pytest.raises(GradprobeError) as info:
        load_sweep(tiny, grid)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["sweep", tiny, "--grid", *grid, "--store", str(store)])
    assert isinstance(result.exception, GradprobeError)
    assert not store.exists()


def test_file_grid_must_be_mapping_of_lists(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ngrid: {depth: 3}\n")
    with pytest.raises(GradprobeError, match=r"grid\.depth: 3 is not a list"):
        load_sweep(str(path))


def test_hash_matches_config_read_back_from_store(tiny: str, tmp_path: Path) -> None:
    sweep = load_sweep(tiny, ["depth=2", "activation=tanh"], seeds=1)
    outcome = run_sweep(sweep, tmp_path / "store")
    (run_id, doc), = read_run_docs(tmp_path / "store")
    assert outcome.ran == [run_id]
    assert config_hash(doc["config"]) == sweep.items[0].config_hash
    assert doc["meta"]["batch"] == sweep.sweep_id

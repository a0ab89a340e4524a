"""Bad input through the real CLI: one line naming field, value and what is allowed; exit 2; no store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import robust_proc

SMALL = ["--set", "train.epochs=1", "--set", "data.n_samples=64"]
CASES = [  # (argv after "run", words the one line must contain)
    (["circles-shallow", "--set", "optimizer.lrr=0.1"], ["optimizer.lrr", "unknown key", "did you mean 'lr'"]),
    (["circles-shallow", "--set", "modle.depth=3"], ["modle", "unknown key", "did you mean 'model'"]),
    (["circles-shallow", "--set", "train.epochs=abc"], ["train.epochs", "'abc'", "integer"]),
    (["circles-shallow", "--set", "train.epochs=true"], ["train.epochs", "True", "number"]),
    (["circles-shallow", "--set", "model.depth=0", "--set", "model.width=3"], ["model.depth", "0", ">= 1"]),
    (["circles-shallow", "--set", "model.depth=3", "--set", "model.width=0"], ["model.width", "0", ">= 1"]),
    (["circles-shallow", "--set", "optimizer.lr=-0.1"], ["optimizer.lr", "-0.1", "greater than 0"]),
    (["circles-shallow", "--set", "data.noise=-1"], ["data.noise", "-1", "greater than or equal to 0"]),
    (["circles-shallow", "--set", "model.activation=sigmoyd"], ["model.activation", "'sigmoyd'", "sigmoid"]),
    (["circles-shallow", "--set", "model.init=xavier_wrong"], ["model.init", "'xavier_wrong'", "he_normal"]),
    (["circles-shallow", "--set", "optimizer.name=lbfgs"], ["optimizer.name", "'lbfgs'", "'adam'"]),
    (["circles-shallow", "--set", "data.name=cifar"], ["data.name", "'cifar'", "'mnist'"]),
    (["circles-shallow", "--seeds", "0"], ["seeds", "0", "greater than or equal to 1"]),
    (["circles-shallow", "--set", "train.iterations=5"], ["train.epochs and train.iterations conflict"]),
    (["circles-shallow", "--set", "model.hidden=[3]", "--set", "model.depth=2"], ["model.hidden", "not both"]),
    (["circles-shallow", "--set", "record.every=0"], ["record.every", "0", "'epoch'"]),
    (["circles-shallow", "--set", "optimizer.lr"], ["--set", "'optimizer.lr'", "KEY=VALUE"]),
    (["circles-shallow", "--set", "data.name=spiral", "--set", "train.loss=bce"], ["train.loss", "'bce'", "2 classes"]),
    (["circles-shallow", "--set", "record.params=[nothing*]"], ["params", "nothing*", "available names"]),
    (["circles-shallow", "--set", "device=cuda:7"], ["device", "'cuda:7'", "allowed: cpu"]),
    (["circles-shallow", "--set", "device=meta"], ["device", "'meta'", "allowed: cpu"]),
    (["circles-shallwo"], ["experiment", "'circles-shallwo'", "did you mean 'circles-shallow'"]),
    (["circles-shallow", "--resume", "x"], ["--resume", "cannot be combined with EXPERIMENT"]),
    (["--resume", "no-such-run"], ["run", "'no-such-run'"]),
    ([], ["experiment: missing"]),
    (["circles-shallow", "--bogus"], ["No such option: --bogus"]),
    (["circles-shallow", "--seeds", "many"], ["--seeds", "valid integer"]),
]


def _one_line_error(child: robust_proc.Child, words: list[str]) -> str:
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in child.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "words"), CASES, ids=[" ".join(a[1:3]) or "none" for a, _ in CASES])
def test_bad_run_input_is_one_line_exit_2_and_writes_nothing(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    small = [] if args[:1] == ["--resume"] else SMALL  # short runs, should the input be wrongly accepted
    child = robust_proc.run(["run", *small, *args, "--store", str(store)], tmp_path / "logs")
    assert child.wait() == 2, child.stderr
    _one_line_error(child, words)
    assert not store.exists(), sorted(store.rglob("*"))


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "words"), [
    ("name: x\narms: [{name: a}, {name: a}]\n", ["arms", "unique"]),
    ("name: x\narms: [{model: {depth: 2}}]\n", ["arms", "name"]),
    ("name: x\nmodel: {depth: 2, widht: 3}\n", ["model.widht", "did you mean 'width'"]),
    ("name: x\nmodel: [1, 2\n", ["not valid YAML"]),
    ("- 1\n- 2\n", ["top level must be a mapping"]),
    ("!!python/object/apply:os.system ['touch PWNED']\n", ["not valid YAML", "python/object"]),
])
def test_bad_config_files(text: str, words: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    source = _write(tmp_path / "exp.yaml", text)
    child = robust_proc.run(["run", source, "--store", str(store)], tmp_path / "logs")
    assert child.wait() == 2
    _one_line_error(child, words)
    assert not store.exists()
    assert not (Path.cwd() / "PWNED").exists() and not (tmp_path / "PWNED").exists()


def test_missing_data_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    store = tmp_path / "store"
    child = robust_proc.run(["run", "mnist-deep", "--set", f"data.data_dir={tmp_path / 'empty'}",
                             "--store", str(store)], tmp_path / "logs")
    assert child.wait() == 2
    line = _one_line_error(child, ["mnist"])
    assert "download" in line  # tells the user how to get the files
    assert not store.exists()


def test_console_script_reports_bad_input_on_one_line(tmp_path: Path) -> None:
    """The installed entry point itself (not a forked main()) behaves the same."""
    exe = Path(sys.executable).with_name("gradprobe")
    store = tmp_path / "store"
    proc = subprocess.run([str(exe), "run", "circles-shallow", "--set", "model.activation=nope", "--store",
                           str(store)], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: model.activation: 'nope'")
    assert not store.exists()

"""The CLI as a user runs it: subprocesses, exit codes, stdout JSON, the store afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradprobe.store.query import query
from gradprobe.store.reader import list_runs, load_run

EXE = [sys.executable, "-m", "gradprobe.cli"]


def gradprobe(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRADPROBE_STORE": str(store), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=env, timeout=600)


def test_run_json_schema_and_store(tmp_path):
    store = tmp_path / "s"
    res = gradprobe("run", "circles-deep", "--set", "train.epochs=2", "--seeds", "2", "--json", "--no-report",
                    store=store) if _has_report_flag(store) else gradprobe(
        "run", "circles-deep", "--set", "train.epochs=2", "--seeds", "2", "--json", store=store)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # stdout is exactly one JSON object
    assert doc["experiment"] == "circles-deep"
    expected = [(n, s) for n in ("sigmoid", "tanh", "relu") for s in (0, 1)]
    assert [(a["name"], a["seed"]) for a in doc["arms"]] == expected
    for arm in doc["arms"]:
        assert set(arm) == {"name", "seed", "run_id", "final_loss", "train_accuracy", "test_accuracy",
                            "vanishing_factor"}
        run = load_run(arm["run_id"], store)
        assert run.summary["final_loss"] == pytest.approx(arm["final_loss"])
        assert arm["test_accuracy"] is None
    assert len(list_runs(store)) == 6
    counts = query("select kind, count(*) as n from stats group by kind order by kind", store)
    assert set(counts.kind) == {"activation", "delta", "grad", "weight"}


def _has_report_flag(store: Path) -> bool:
    return "--no-report" in gradprobe("run", "--help", store=store).stdout


def test_table_ls_show_query(tmp_path):
    store = tmp_path / "s"
    res = gradprobe("run", "circles-shallow", "--set", "train.epochs=1", store=store)
    assert res.returncode == 0, res.stderr
    for arm in ("relu-1x5", "sigmoid-1x5", "sigmoid-3x5"):
        assert arm in res.stdout
    assert "vanishing factor" in res.stdout and str(store) in res.stdout
    ls = gradprobe("ls", store=store)
    assert ls.returncode == 0 and ls.stdout.count("circles-shallow.") == 3
    run_id = list_runs(store).run_id.iloc[0]
    show = gradprobe("show", run_id, store=store)
    assert show.returncode == 0 and "layers.0.weight" in show.stdout
    q = gradprobe("query", "select count(*) as n from runs", "--json", store=store)
    assert json.loads(q.stdout) == [{"n": 3}]


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "circles-deep", "--set", "model.depth=0"], "model.depth"),
    (["run", "circles-deep", "--set", "optimizer.lr=-1"], "optimizer.lr"),
    (["run", "circles-deep", "--set", "model.activation=sigmod"], "did you mean 'sigmoid'"),
    (["run", "circles-deep", "--set", "optimizer.lrr=1"], "did you mean 'lr'"),
    (["run", "nope"], "presets"),
    (["run", "mnist-deep", "--set", "data.data_dir=/nonexistent"], "data_dir"),
    (["run", "circles-deep", "--seeds", "0"], "seeds"),
    (["show", "no-such-run"], "not found"),
    (["query", "DROP VIEW stats"], "SELECT"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, needle):
    store = tmp_path / "s"
    res = gradprobe(*args, store=store)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_corrupt_idx_file_is_named(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"not a gzip file")
    res = gradprobe("run", "mnist-deep", "--set", f"data.data_dir={tmp_path}", store=tmp_path / "s")
    assert res.returncode == 2 and "ubyte.gz" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_presets_and_decay(tmp_path):
    res = gradprobe("presets", store=tmp_path)
    for name in ("mnist-deep", "circles-shallow", "circles-deep", "circles-glorot", "spiral", "sigmoid-decay"):
        assert name in res.stdout
    decay = gradprobe("run", "sigmoid-decay", "--json", store=tmp_path)
    chains = json.loads(decay.stdout)["chains"]
    sig0 = next(c for c in chains if c["activation"] == "sigmoid" and c["x"] == 0.0)
    assert sig0["products"] == pytest.approx([0.25 ** n for n in range(1, 7)])  # the seed: n = 6 layers

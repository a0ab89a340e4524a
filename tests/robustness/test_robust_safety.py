"""Untrusted names, SQL, YAML and checkpoints cannot escape the store, change it or run code."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import sys
from pathlib import Path

import pytest
import robust_proc
import torch

from gradprobe import records as R
from gradprobe.cli.main import main
from gradprobe.errors import GradprobeError
from gradprobe.store import list_runs, load_run, query
from gradprobe.train.checkpoint import load_checkpoint
from gradprobe.train.experiment import read_source

TINY = """name: {name}
data: {{name: circles, n_samples: 96, seed: 0}}
model: {{hidden: [4], activation: tanh}}
train: {{batch_size: 32, epochs: 2}}
record: {{every: 1}}
arms: [{{name: {arm}}}]
"""


def _tiny(tmp_path: Path, name: str = "tiny", arm: str = "a") -> str:
    path = tmp_path / f"{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(TINY.format(name=name, arm=arm))
    return str(path)


def _digest(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with one finished run, shared: the tests using it must leave it unchanged."""
    tmp_path = tmp_path_factory.mktemp("filled")
    store = tmp_path / "store"
    child = robust_proc.run(["run", _tiny(tmp_path), "--no-report", "--store", str(store)], tmp_path / "logs")
    assert child.wait() == 0, child.stderr
    return store


@pytest.mark.parametrize("run_id", ["../../x", "../secret", "/etc", "runs/../../x", ".hidden", "a/b"])
def test_show_refuses_ids_that_leave_the_store(filled: Path, tmp_path: Path, run_id: str) -> None:
    decoy = tmp_path / "x"
    decoy.mkdir()
    (decoy / "run.json").write_text('{"status": "DECOY", "config": {"secret": 1}}')
    child = robust_proc.run(["show", run_id, "--store", str(filled)], tmp_path / "logs")
    assert child.wait() == 2
    assert child.stderr.strip().startswith("error: run:") and "not a valid run id" in child.stderr
    assert "DECOY" not in child.stdout + child.stderr


def test_nul_bytes_in_ids_are_refused_in_process(filled: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """argv cannot carry NUL through exec, so the CLI's main() is called in this process."""
    with pytest.raises(GradprobeError, match="not a valid run id"):
        load_run("tiny\x00../../x", filled)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(sys, "argv", ["gradprobe", "show", "tiny\x00", "--store", str(filled)])
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run: 'tiny\\x00'") and err.count("\n") == 1


def test_hostile_experiment_and_arm_names_stay_inside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "deep" / "store"
    source = _tiny(tmp_path, name='"../../../evil"', arm='"/tmp/abs\\0arm"')
    child = robust_proc.run(["run", source, "--no-report", "--store", str(store)], tmp_path / "logs")
    assert child.wait() == 0, child.stderr
    (run_dir,) = (store / "runs").iterdir()
    assert run_dir.resolve().parent == (store / "runs").resolve()
    assert ".." not in run_dir.name and "/" not in run_dir.name and "\x00" not in run_dir.name
    outside = [p for p in tmp_path.rglob("*evil*") if store not in p.parents]
    assert not outside and not Path("/tmp/abs").exists()
    assert load_run(run_dir.name, store).meta["experiment"] == "../../../evil"  # kept as data, not a path


@pytest.mark.parametrize("sql", [
    "DELETE FROM stats",
    "DROP TABLE runs",
    "UPDATE runs SET status = 'x'",
    "INSERT INTO runs SELECT * FROM runs",
    "select 1; delete from runs",
    "COPY stats TO 'leak.csv'",
    "ATTACH 'other.db' AS other",
    "INSTALL httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "CREATE TABLE t AS SELECT 1",
])
def test_query_cannot_change_the_store(filled: Path, tmp_path: Path, sql: str) -> None:
    before = _digest(filled)
    child = robust_proc.run(["query", sql, "--store", str(filled)], tmp_path / "logs")
    assert child.wait() == 2, child.stdout
    assert child.stderr.strip().startswith("error: query:") and len(child.stderr.strip().splitlines()) == 1
    assert _digest(filled) == before
    assert not (tmp_path / "leak.csv").exists() and not Path("leak.csv").exists()
    assert int(query("select count(*) as n from runs", filled)["n"][0]) == 1


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.target}",))


def test_yaml_and_checkpoints_never_run_code(tmp_path: Path) -> None:
    sentinel = tmp_path / "PWNED"
    source = tmp_path / "evil.yaml"
    source.write_text(f"!!python/object/apply:os.system ['touch {sentinel}']\n")
    with pytest.raises(GradprobeError, match="not valid YAML"):
        read_source(str(source))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "model": _Payload(sentinel)}, ckpt)
    with pytest.raises(GradprobeError, match="not a readable checkpoint"):
        load_checkpoint(ckpt)
    assert not sentinel.exists()
    assert pickle.loads(pickle.dumps(_Payload(sentinel))) == 0 and sentinel.exists()  # the payload was live


def test_four_concurrent_runs_into_one_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    children = [robust_proc.start(["run", _tiny(tmp_path, name=f"c{i}"), "--seeds", "2", "--no-report",
                                   "--store", str(store)], tmp_path / "logs") for i in range(4)]
    assert [c.wait() for c in children] == [0] * 4, [c.stderr for c in children]
    runs = list_runs(store)
    assert len(runs) == 8 and set(runs["status"]) == {R.FINISHED}
    assert sorted(runs["experiment"]) == sorted(f"c{i}" for i in range(4) for _ in range(2))
    frames = {r: load_run(r, store).frame() for r in runs["run_id"]}
    steps = 2 * 96 // 32
    assert all(set(f.step) == set(range(steps + 1)) for f in frames.values())
    assert int(query("select count(*) as n from stats", store)["n"][0]) == sum(len(f) for f in frames.values())

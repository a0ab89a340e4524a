"""resolve_runs: run ids, prefixes and experiment names (= latest invocation); report_dir naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradprobe.errors import GradprobeError
from gradprobe.report.select import report_dir, resolve_runs


def test_experiment_name_means_its_newest_batch(make_run, store: Path) -> None:
    old = [make_run("exp", arm, batch="exp.batch.20260101-000000.aaaa", created=1.7e9) for arm in "ab"]
    new = [make_run("exp", arm, batch="exp.batch.20270101-000000.bbbb", created=1.9e9 + i)
           for i, arm in enumerate("abc")]
    make_run("other", "a", batch="other.batch.20280101-000000.cccc", created=2.0e9)
    got = resolve_runs(["exp"], store)
    assert [r.run_id for r in got] == [r.run_id for r in new]
    assert not {r.run_id for r in old} & {r.run_id for r in got}


def test_ids_prefixes_and_experiments_mix_without_duplicates(make_run, store: Path) -> None:
    a = make_run("exp", "a", created=1.8e9)
    b = make_run("exp", "b", created=1.8e9 + 1)
    c = make_run("other", "c", created=1.8e9 + 2)
    got = resolve_runs([c.run_id, "exp.b", "exp", a.run_id], store)
    assert [r.run_id for r in got] == [c.run_id, b.run_id, a.run_id]


def test_runs_without_batch_are_each_their_own_invocation(make_run, store: Path) -> None:
    make_run("exp", "a", batch=None, created=1.8e9)
    newest = make_run("exp", "b", batch=None, created=1.9e9)
    assert [r.run_id for r in resolve_runs(["exp"], store)] == [newest.run_id]


@pytest.mark.parametrize(("args", "message"), [
    ([], "at least one"),
    (["nope"], "'nope' not found"),
    (["exp."], "ambiguous"),
    (["../etc"], "neither a run id nor an experiment"),
])
def test_bad_names_are_one_line_errors(make_run, store: Path, args: list[str], message: str) -> None:
    make_run("exp", "a")
    make_run("exp", "b")
    with pytest.raises(GradprobeError, match=message) as info:
        resolve_runs(args, store)
    assert "\n" not in str(info.value)


def test_report_dir_uses_experiment_and_batch_stamp(make_run, store: Path) -> None:
    runs = [make_run("exp", "a", batch="exp.batch.20261123-191212.53da")]
    assert report_dir(runs, store) == store / "reports" / "exp-20261123-191212"
    runs.append(make_run("x/../y", "b", batch="x.batch.20270101-000000.0000"))
    folder = report_dir(runs, store)
    assert folder.parent == store / "reports" and folder.name == "exp-x-.-y-20270101-000000"

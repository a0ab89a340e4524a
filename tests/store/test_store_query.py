"""SQL over the store: SELECTs work and join; nothing else runs and no file changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from gradprobe.errors import GradprobeError
from gradprobe.store import RunWriter, query

NewWriter = Callable[..., RunWriter]
Factory = Callable[..., pd.DataFrame]


@pytest.fixture
def filled(
    root: Path,
    new_writer: NewWriter,
    make_stats: Factory,
    make_metrics: Factory,
    make_hists: Factory,
) -> Path:
    """A store with two finished runs."""
    for i, arm in enumerate(("relu", "sigmoid")):
        meta = {"experiment": "deep", "arm": arm, "seed": i}
        with new_writer(f"deep.{arm}.s{i}", meta=meta) as w:
            w.add_stats(make_stats(seed=i))
            w.add_metrics(make_metrics())
            w.add_hists(make_hists())
            w.set_summary(final_loss=float("nan") if arm == "sigmoid" else 0.1)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_select_and_join(filled: Path) -> None:
    out = query(
        "SELECT r.arm, count(*) AS n, avg(s.value) AS v FROM stats s JOIN runs r USING (run_id) "
        "WHERE s.kind = 'grad' GROUP BY r.arm ORDER BY r.arm",
        filled,
    )
    assert list(out.arm) == ["relu", "sigmoid"] and list(out.n) == [84, 84]


def test_runs_table(filled: Path) -> None:
    out = query(
        "SELECT run_id, seed, status, json_extract(config, '$.depth')::INT AS depth, "
        "json_extract(summary, '$.final_loss')::DOUBLE AS loss FROM runs ORDER BY run_id",
        filled,
    )
    assert list(out.depth) == [3, 3] and list(out.seed) == [0, 1]
    assert out.loss[0] == pytest.approx(0.1) and out.loss.isna()[1]  # NaN is stored as JSON null


def test_metrics_and_hists_views(filled: Path) -> None:
    assert query("SELECT count(*) AS n FROM metrics", filled).n[0] == 12
    out = query("SELECT len(edges) AS e, len(counts) AS c FROM hists LIMIT 1", filled)
    assert (out.e[0], out.c[0]) == (5, 4)


def test_empty_store_has_typed_views(tmp_path: Path) -> None:
    out = query("SELECT * FROM stats", tmp_path / "none")
    assert out.empty and list(out.columns) == [
        "step",
        "layer",
        "tensor",
        "kind",
        "stat",
        "value",
        "run_id",
    ]
    assert query("SELECT count(*) AS n FROM runs", tmp_path / "none").n[0] == 0
    assert list(query("SELECT * FROM hists", tmp_path / "none").columns)[4:6] == ["edges", "counts"]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("DELETE FROM runs", "DELETE"),
        ("DROP VIEW stats", "DROP"),
        ("COPY (SELECT * FROM stats) TO '{root}/out.csv'", "COPY"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("INSERT INTO runs (run_id) VALUES ('x')", "INSERT"),
        ("ATTACH '{root}/x.duckdb' AS x", "ATTACH"),
        ("SELECT 1; DROP VIEW stats", "DROP"),
        ("SET enable_external_access=true", "SET"),
    ],
)
def test_refused_statements(filled: Path, sql: str, kind: str) -> None:
    before = _digest(filled)
    with pytest.raises(GradprobeError) as info:
        query(sql.format(root=filled), filled)
    assert str(info.value) == f"query: only SELECT statements are allowed (got {kind})"
    assert _digest(filled) == before


def test_no_file_access_outside_store(filled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with pytest.raises(GradprobeError, match="query: Permission Error"):
        query(f"SELECT * FROM read_csv('{outside}')", filled)


def test_two_selects_refused(filled: Path) -> None:
    with pytest.raises(GradprobeError, match=r"exactly one SELECT statement \(got 2\)"):
        query("SELECT 1; SELECT 2", filled)


def test_sql_errors_are_one_line(filled: Path) -> None:
    with pytest.raises(GradprobeError) as info:
        query("SELECT nope FROM stats", filled)
    assert str(info.value).startswith("query: Binder Error") and "\n" not in str(info.value)
    with pytest.raises(GradprobeError, match="query: Parser Error"):
        query("SELEC 1", filled)

"""Run ids, store resolution and file naming."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradprobe.errors import GradprobeError
from gradprobe.store import (
    checkpoint_path,
    new_run_id,
    resolve_store,
    run_dir,
    sanitize_run_id,
    validate_run_id,
)
from gradprobe.store.layout import is_valid_run_id, parse_part_name, part_name


@pytest.mark.parametrize(
    ("run_id", "valid"),
    [
        ("../../x", False),
        ("/etc/passwd", False),
        ("a\x00b", False),
        ("", False),
        (".hidden", False),
        ("a..b", False),
        ("a/b", False),
        ("ok\n", False),
        ("x" * 129, False),
        ("ok-run_1.2", True),
        ("x" * 128, True),
        ("circles-deep.sigmoid.s0.20261123-190102.a3f9", True),
    ],
)
def test_validate_run_id(run_id: str, valid: bool) -> None:
    if valid:
        assert validate_run_id(run_id) == run_id
    else:
        with pytest.raises(GradprobeError) as info:
            validate_run_id(run_id)
        assert str(info.value) == (
            f"run: {run_id!r} is not a valid run id; use letters, digits, '.', '_' and '-'"
        )


def test_run_dir_refuses_escape(tmp_path: Path) -> None:
    with pytest.raises(GradprobeError, match="not a valid run id"):
        run_dir("../../x", tmp_path)
    assert run_dir("a", tmp_path) == tmp_path.absolute() / "runs" / "a"
    assert checkpoint_path("a", tmp_path) == tmp_path.absolute() / "runs" / "a" / "checkpoint.pt"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_sanitize_always_gives_a_valid_id(text: str) -> None:
    assert is_valid_run_id(sanitize_run_id(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("../../x", "x"), ("my exp/1", "my-exp-1"), ("", "run"), ("ok-run_1.2", "ok-run_1.2")],
)
def test_sanitize_examples(text: str, expected: str) -> None:
    assert sanitize_run_id(text) == expected


def test_new_run_id_shape() -> None:
    clock = lambda: 1_795_460_462.0  # 2026-11-23 19:01:02 UTC
    run_id = new_run_id("circles-deep", "sigmoid", 0, clock=clock)
    assert run_id.startswith("circles-deep.sigmoid.s0.20261123-190102.")
    assert len(run_id.rsplit(".", 1)[1]) == 4
    ugly = new_run_id("../../etc passwd", "a/b", None, clock=clock)
    assert is_valid_run_id(ugly) and ugly.startswith("etc-passwd.a-b.20261123-190102.")
    assert is_valid_run_id(new_run_id("x" * 500, "y" * 500, 10**30, clock=clock))


def test_new_run_ids_are_unique() -> None:
    ids = {new_run_id("e", "a", 1, clock=lambda: 0.0) for _ in range(50)}
    assert len(ids) > 40  # 4 random hex digits: a few collisions in 50 draws are unlikely


def test_resolve_store_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRADPROBE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_store(None) == tmp_path / "gradprobe-runs"
    monkeypatch.setenv("GRADPROBE_STORE", str(tmp_path / "env"))
    assert resolve_store(None) == tmp_path / "env"
    assert resolve_store(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_store("rel") == tmp_path / "rel"


def test_part_names() -> None:
    assert part_name("stats", 1) == "stats-000001.parquet"
    assert parse_part_name("metrics-000012.parquet") == ("metrics", 12)
    assert parse_part_name(".tmp-stats-000009.parquet") is None
    assert parse_part_name("stats-1.parquet") is None
    with pytest.raises(ValueError, match="not a part kind"):
        part_name("grads", 1)

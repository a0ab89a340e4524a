"""``gradprobe sweep`` counts each arm's verdicts: checked against ``gradprobe diagnose --json`` run by run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from gradprobe.cli.main import app
from gradprobe.store.reader import read_run_docs
from gradprobe.sweep.aggregate import UNDIAGNOSED, verdict_counts


def test_verdict_counts_order_and_text() -> None:
    assert verdict_counts(["healthy"] * 5 + ["exploding", "dead", "dead"]) == "healthy 5, dead 2, exploding 1"
    # ties: the more severe verdict first, undiagnosed last
    assert verdict_counts(["healthy", UNDIAGNOSED, "vanishing", "unstable"]) == (
        "unstable 1, vanishing 1, healthy 1, undiagnosed 1")
    assert verdict_counts([]) == ""


def test_sweep_table_counts_the_verdicts_diagnose_gives(tiny: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", tiny, "--store", str(store), "--json", "--seeds", "3"])
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)["points"]
    assert len(points) == 4 and all(p["n_runs"] == 3 for p in points)
    expected: dict[tuple[str, int], Counter[str]] = {}
    for run_id, doc in read_run_docs(store):
        verdict = json.loads(runner.invoke(app, ["diagnose", run_id, "--store", str(store), "--json"]).stdout)
        key = (doc["config"]["model"]["activation"], doc["config"]["model"]["depth"])
        expected.setdefault(key, Counter())[verdict["verdict"]] += 1
    for p in points:
        got = Counter({v: int(n) for v, n in (part.rsplit(" ", 1) for part in p["verdicts"].split(", "))})
        assert got == expected[(p["model.activation"], p["depth"])], p["point"]
    table = runner.invoke(app, ["sweep", tiny, "--store", str(store), "--seeds", "3"])
    assert table.exit_code == 0 and "verdicts" in table.stdout
    assert points[0]["verdicts"].split(",")[0] in table.stdout

"""The report page's data: values as the store holds them (read by DuckDB), escaping, downsampling."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradprobe import records as R
from gradprobe.report.html import page_data, render_html, write_html, write_report
from gradprobe.store import RunWriter, query
from gradprobe.store.reader import Run


def _page_json(text: str) -> dict:
    match = re.search(r'<script type="application/json" id="gp-data">(.*?)</script>', text, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


def test_series_match_the_store_read_by_duckdb(make_run, store: Path) -> None:
    runs = [make_run("exp", "a", 0), make_run("exp", "b", 1)]
    data = page_data(runs)
    sql = "SELECT run_id, step, layer, tensor, kind, stat, value FROM stats ORDER BY run_id, step"
    oracle = query(sql, store)
    assert len(oracle) == sum(len(r.frame()) for r in runs) > 0
    checked = 0
    for page_run in data["runs"]:
        for (kind, stat, layer, tensor), group in oracle[oracle.run_id == page_run["id"]].groupby(
                ["kind", "stat", "layer", "tensor"]):
            steps, values = page_run["stats"][kind][stat][f"{layer}.{tensor}"]
            assert steps == group["step"].tolist()
            # float32 in the store; the page holds each value's shortest float32 decimal
            np.testing.assert_array_equal(np.float32(values), group["value"].to_numpy(np.float32))
            checked += 1
    assert checked == 2 * (2 * 2 * 5 + 2 * 2)
    assert [r["label"] for r in data["runs"]] == ["a · s0", "b · s1"]
    assert data["runs"][0]["layers"]["grad"] == ["layers.0.weight", "layers.0.bias",
                                                "layers.2.weight", "layers.2.bias"]


def test_metrics_hists_config_and_env_are_in_the_page(make_run) -> None:
    run = make_run("exp", "a", config={"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}})
    page = page_data([run])["runs"][0]
    metrics = run.metrics()
    loss = metrics[metrics.metric == R.LOSS]
    assert page["metrics"]["train/loss"] == [loss["step"].tolist(), loss["value"].tolist()]
    hists = run.hists()
    first = page["hists"]["grad"]["layers.0.weight"]
    rows = hists[hists.layer == "layers.0"]
    assert first["steps"] == rows["step"].tolist()
    assert first["counts"][1] == rows["counts"].iloc[1].tolist()
    np.testing.assert_allclose(first["edges"][1], rows["edges"].iloc[1], rtol=1e-7)
    assert page["config"] == [["optimizer.betas", "[0.9, 0.99]"], ["optimizer.lr", "0.01"]]
    assert page["env"] == [["python", "3.x"]] and ["final_loss", "0.5"] in page["summary"]


def test_long_series_are_downsampled_and_the_page_says_so(make_run) -> None:
    run = make_run("exp", "a", n_steps=50)
    data = page_data([run], max_points=7)
    steps, values = data["runs"][0]["stats"]["grad"]["mean_abs"]["layers.0.weight"]
    frame = run.frame(kind="grad", stat="mean_abs", layer="layers.0")
    frame = frame[frame.tensor == "weight"].set_index("step")["value"]
    assert len(steps) == 7 and steps[0] == 0 and steps[-1] == 49
    np.testing.assert_allclose(values, frame.loc[steps].to_numpy(), rtol=1e-6)
    assert "7 evenly spaced steps" in data["notes"][0] and "a · s0" in data["notes"][0]
    assert "evenly spaced" not in " ".join(page_data([run])["notes"])


def test_non_finite_values_become_gaps(store: Path) -> None:
    frame = pd.DataFrame({"step": [0, 1, 2], "layer": "l", "tensor": "weight", "kind": R.GRAD,
                          "stat": R.NORM, "value": [1.5, math.nan, math.inf]})
    with RunWriter(store, "nf", config={}, env={}, meta={"experiment": "e", "arm": "a"}) as writer:
        writer.add_stats(frame)
    page = page_data([Run(writer.path)])
    assert page["runs"][0]["stats"]["grad"]["norm"]["l.weight"] == [[0, 1, 2], [1.5, None, None]]


def test_user_strings_cannot_leave_the_json_block(make_run, tmp_path: Path) -> None:
    evil = "</script><script>alert(1)</script>&amp;"
    run = make_run("exp", evil, layers=("a</script>", "b"), config={"note": evil})
    text = render_html([run])
    data_block = text[text.index('id="gp-data">'):]
    data_block = data_block[:data_block.index("</script>")]
    assert "<" not in data_block[len('id="gp-data">'):] and "&" not in data_block
    page = _page_json(text)["runs"][0]
    assert page["arm"] == evil and ["note", evil] in page["config"]
    assert "a</script>.weight" in page["layers"]["grad"]
    path = write_html([run], tmp_path / "sub" / "report.html")
    assert path.read_text(encoding="utf-8") == text


def test_write_report_writes_the_page_and_figures(make_run, tmp_path: Path) -> None:
    page, figures = write_report([make_run("exp", "a", n_steps=6)], tmp_path / "out")
    assert page == tmp_path / "out" / "report.html" and page.stat().st_size > 4_000_000
    assert figures and all(f.parent == tmp_path / "out" and f.stat().st_size > 0 for f in figures)


def test_without_the_figures_module_only_the_page_is_written(
        make_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "gradprobe.report.figures", None)  # import fails as if absent
    _, figures = write_report([make_run("exp", "a")], tmp_path / "out")
    assert figures == [] and [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]
    assert "figures skipped" in caplog.text

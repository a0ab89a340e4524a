"""Commands that do not train must not import torch, pandas, scipy or the plotting libraries (issue 11).

Each command runs through the real entry point in a fresh interpreter; what it imported is read
from ``sys.modules`` afterwards. ``ls`` reads only ``run.json`` files; ``show`` needs pyarrow for the
gradient table (parquet) but not pandas; ``query`` needs DuckDB and pandas but not torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradprobe import records as R
from gradprobe.store import RunWriter

HEAVY = ("torch", "pandas", "pyarrow", "duckdb", "scipy", "matplotlib", "plotly")

# Runs the real entry point with ARGV, then prints which heavy modules it loaded as JSON on stderr's last line.
_PROBE = """
import json, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["gradprobe", *json.loads(sys.argv[1])]
from gradprobe.cli.main import main
try:
    main()
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def _loaded(args: list[str], store: Path) -> list[str]:
    """Run ``gradprobe ARGS`` in a fresh interpreter; return the heavy modules it had loaded at the end."""
    env = {**os.environ, "GRADPROBE_STORE": str(store), "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stderr.strip().splitlines()[-1])


def _store_with_a_run(root: Path) -> str:
    """A store holding one finished run with gradient statistics at three steps; returns its id."""
    run_id = "exp.relu.s0.20260101-000000.abcd"
    rows = [(step, f"layers.{i}", "weight", R.GRAD, R.MEAN_ABS, 10.0 ** -i / (step + 1))
            for step in (0, 5, 10) for i in range(3)]
    with RunWriter(root, run_id, config={"lr": 0.1}, env={}, meta={"experiment": "exp", "arm": "relu",
                                                                 "seed": 0}) as writer:
        writer.add_stats(pd.DataFrame(rows, columns=list(R.STAT_COLUMNS)).astype({"value": np.float64}))
        writer.set_summary(final_loss=0.5, train_accuracy=0.9)
    return run_id


def test_importing_the_cli_loads_no_heavy_module():
    code = ("import gradprobe.cli.main; import sys; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["run", "--help"], ["sweep", "--help"],
                                  ["theory", "--help"], ["ls", "--help"], ["query", "--help"]])
def test_commands_that_do_not_train_load_no_heavy_module(args, tmp_path):
    assert _loaded(args, tmp_path) == []


def test_presets_lists_every_preset_without_torch(tmp_path):
    env = {**os.environ, "COLUMNS": "300"}
    res = subprocess.run([sys.executable, "-m", "gradprobe.cli", "presets"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    shipped = sorted(p.stem for p in (Path(__file__).parents[2] / "src/gradprobe/presets").glob("*.yaml"))
    assert shipped and all(name in res.stdout for name in shipped)
    assert _loaded(["presets"], tmp_path) == []


def test_ls_reads_run_json_files_only(tmp_path):
    _store_with_a_run(tmp_path)
    assert _loaded(["ls"], tmp_path) == []


def test_show_reads_the_gradient_table_with_pyarrow_alone(tmp_path):
    run_id = _store_with_a_run(tmp_path)
    assert _loaded(["show", run_id], tmp_path) == ["pyarrow"]


def test_query_loads_duckdb_but_not_torch(tmp_path):
    _store_with_a_run(tmp_path)
    loaded = _loaded(["query", "select count(*) as n from stats"], tmp_path)
    assert "duckdb" in loaded
    assert not {"torch", "scipy", "matplotlib", "plotly"} & set(loaded)

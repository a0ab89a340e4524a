"""Commands that do not train must not import torch, pandas, scipy or the plotting libraries (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "plotly", "duckdb")

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


def test_importing_the_cli_loads_no_heavy_module():
    code = ("import gradprobe.cli.main; import sys; "
            "print(sorted(m for m in ('torch','pandas','scipy','matplotlib','plotly') if m in sys.modules))")
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


def test_ls_reads_the_store_without_torch_or_plotting(tmp_path):
    loaded = _loaded(["ls"], tmp_path)
    assert not {"torch", "scipy", "matplotlib", "plotly"} & set(loaded)

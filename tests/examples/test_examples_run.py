"""Every example runs: the notebook through a real Jupyter kernel (nbclient), the scripts as scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHARED_DATA = Path(os.environ.get("GRADPROBE_TEST_DATA", EXAMPLES.parents[1] / "shared" / "data"))


def test_notebook_executes(tmp_path, monkeypatch):
    mnist = (SHARED_DATA / "mnist").is_dir()
    if mnist:
        monkeypatch.setenv("GRADPROBE_DATA", str(SHARED_DATA))
    else:
        monkeypatch.delenv("GRADPROBE_DATA", raising=False)
    monkeypatch.setenv("GRADPROBE_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders figures
    nb = nbformat.read(EXAMPLES / "vanishing_gradients.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "after 6 layers: 0.000244" in text  # 0.25**6 for the sigmoid at 0
    assert "sigmoid -> vanishing" in text
    assert ("mnist" in text and "skipping MNIST" not in text) if mnist else "skipping MNIST" in text
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 5


def test_own_model_script_runs(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "own_model.py")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "conv1" in res.stdout and "head" in res.stdout

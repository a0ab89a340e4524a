"""Width-scaling check: standard parametrisation's known behaviour, a NumPy hand computation, the CLI end to end.

Oracles: a plain torch SGD loop whose weights are read at every step and pushed through a NumPy forward;
and, for the stored runs, the in-process computation read back through the store's reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.coord_check import CoordSetup, coord_batch, coord_check, slopes
from gradprobe.report.figures import save_figures
from gradprobe.store.layout import run_ids
from gradprobe.store.reader import load_run

EXE = [sys.executable, "-m", "gradprobe.cli"]


def _sp_mlp(width: int, gen: torch.Generator, features: int = 32, classes: int = 10) -> nn.Sequential:
    """Standard parametrisation: PyTorch's default Linear init (U(+-1/sqrt(fan_in))), seeded from ``gen``."""
    with torch.random.fork_rng():
        torch.manual_seed(gen.initial_seed())
        return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, classes))


def test_standard_parametrisation_flat_at_init_but_output_change_grows_with_width() -> None:
    frame = coord_check(_sp_mlp, [64, 256, 1024], CoordSetup(steps=3, seeds=2, lr=0.5))
    table = slopes(frame).set_index(["layer", "stat"])["slope"]
    for layer in ("0", "1", "2", "3", "4"):
        assert abs(table[(layer, R.ACT_RMS)]) < 0.1  # the init keeps every coordinate O(1)
    assert table[("4", R.ACT_DELTA_RMS)] > 0.5  # the logits' change after 3 SGD steps grows with width
    last = frame[(frame.layer == "4") & (frame.stat == R.ACT_DELTA_RMS) & (frame.step == 3)].sort_values("width")
    assert np.all(np.diff(last.value.to_numpy()) > 0)


def _numpy_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """Every module's output of the 5-layer SP MLP, by hand, in float64."""
    outs, h = {}, x
    for i in range(5):
        if i % 2 == 0:
            h = h @ weights[f"{i}.weight"].T + weights[f"{i}.bias"]
        else:
            h = np.maximum(h, 0.0)
        outs[str(i)] = h
    return outs


def test_values_equal_a_numpy_hand_computation() -> None:
    setup = CoordSetup(steps=3, seeds=1, lr=0.3, batch=16, features=8, classes=4)
    width = 16
    frame = coord_check(lambda w, g: _sp_mlp(w, g, 8, 4), [width, 2 * width], setup)
    frame = frame[frame.width == width]
    model = _sp_mlp(width, torch.Generator().manual_seed(0), 8, 4)
    x, y = coord_batch(setup, 0)
    opt = torch.optim.SGD(model.parameters(), lr=setup.lr)
    states = []
    for _ in range(setup.steps):
        states.append({n: p.detach().double().numpy().copy() for n, p in model.named_parameters()})
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    states.append({n: p.detach().double().numpy().copy() for n, p in model.named_parameters()})
    xs = x.double().numpy()
    first = _numpy_forward(states[0], xs)

    def recorded(step: int, layer: str, stat: str) -> float:
        sel = frame[(frame.step == step) & (frame.layer == layer) & (frame.stat == stat)]
        return float(sel.value.item())

    for step, state in enumerate(states):
        outs = _numpy_forward(state, xs)
        for layer, out in outs.items():
            rms = np.sqrt(np.mean(out**2))
            assert recorded(step, layer, R.ACT_RMS) == pytest.approx(rms, rel=1e-5)
            if step:
                change = np.sqrt(np.mean((out - first[layer]) ** 2))
                assert recorded(step, layer, R.ACT_DELTA_RMS) == pytest.approx(change, rel=1e-4)
        if step < setup.steps:
            for layer in ("0", "2", "4"):
                upd = states[step + 1][f"{layer}.weight"] - state[f"{layer}.weight"]
                assert recorded(step, layer, R.UPD_RMS) == pytest.approx(np.sqrt(np.mean(upd**2)), rel=1e-4)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "MPLBACKEND": "agg"}
    return subprocess.run([*EXE, "coord-check", *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd)


def test_cli_end_to_end_stores_runs_the_report_draws(tmp_path: Path) -> None:
    store = tmp_path / "store"
    res = _cli("depth=2,activation=tanh,init=lecun_normal", "--widths", "8,16,32", "--steps", "2", "--seeds", "2",
               "--store", str(store), "--figure", str(tmp_path / "coord.png"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for layer in ("layers.0", "layers.1", "layers.2", "layers.3", "layers.4"):
        assert sum(line.startswith(f"{layer}: ") for line in lines) == 1  # one verdict per layer
    assert (tmp_path / "coord.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = [load_run(run_id, store) for run_id in run_ids(store)]
    assert sorted(r.config["width"] for r in runs) == [8, 16, 32]
    # the stored rows equal the same computation in process, with the MLP the spec describes
    from gradprobe.cli.coord import _builder, model_section

    setup = CoordSetup(steps=2, seeds=2)
    want = coord_check(_builder(model_section("depth=2,activation=tanh,init=lecun_normal"), setup), [8, 16, 32],
                       setup)
    for run in runs:
        got = run.frame(kind=R.COORD).sort_values(["step", "layer", "stat"]).reset_index(drop=True)
        ref = want[want.width == run.config["width"]].sort_values(["step", "layer", "stat"]).reset_index(drop=True)
        assert list(got.stat) == list(ref.stat) and list(got.layer) == list(ref.layer)
        np.testing.assert_allclose(got.value, ref.value, rtol=1e-6)  # the store keeps float32
    written = save_figures(runs, tmp_path / "figures", formats=("png",))
    assert [p.name for p in written if "coord" in p.name] == ["14-coord-check.png"]


@pytest.mark.parametrize("widths", ["8", "8,x", "0,16"])
def test_bad_widths_one_line_error(widths: str, tmp_path: Path) -> None:
    res = _cli("depth=2", "--widths", widths, "--no-store", cwd=tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "--widths" in line and repr(widths) in line and "allowed" in line


def test_bad_model_spec_one_line_error(tmp_path: Path) -> None:
    res = _cli("depth=2,foo=1", "--widths", "8,16", "--no-store", cwd=tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "model.foo" in line and "allowed" in line and "depth" in line

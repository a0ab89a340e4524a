"""The theory/decay commands and the theory figures, on a real stored run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradprobe import theory
from gradprobe.cli.main import main
from gradprobe.errors import GradprobeError
from gradprobe.models import ModelConfig, build_mlp
from gradprobe.plots.theory import chi_vs_sigma, predicted_vs_measured
from gradprobe.store.reader import Run, load_run
from gradprobe.store.writer import RunWriter


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gradprobe", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


_MODEL = {"activation": "tanh", "depth": 4, "width": 16, "init": "glorot_uniform"}


@pytest.fixture
def tanh_run(tmp_path: Path) -> tuple[Run, dict[str, torch.Tensor]]:
    """A stored run whose step-0 grad stats come from p.grad of a real MLP; returns it and the grads."""
    model = build_mlp(2, 1, ModelConfig(**_MODEL), torch.Generator().manual_seed(0))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    y = (x.norm(dim=1, keepdim=True) > 1).float()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    grads = {name: model.get_parameter(name).grad.detach().clone() for name in model.weight_layers()}
    rows = [{"step": step, "layer": name.removesuffix(".weight"), "tensor": "weight", "kind": "grad",
             "stat": stat, "value": float(value)}
            for step in (0, 1) for name, g in grads.items()
            for stat, value in (("norm", g.norm()), ("std", g.std()), ("mean", g.mean()))]
    with RunWriter(tmp_path, "theory-test-run", config={"model": _MODEL}, env={}, meta={}) as writer:
        writer.add_stats(pd.DataFrame(rows))
        writer.set_summary(weight_layers=model.weight_layers())
    return load_run("theory-test-run", tmp_path), grads


def test_theory_json_matches_library(monkeypatch, capsys) -> None:
    code, out, _ = _cli(monkeypatch, capsys, "theory", "--activation", "relu", "--init", "he_normal",
                        "--depth", "4", "--width", "32", "--mc-samples", "4", "--json")
    assert code == 0
    doc = json.loads(out)
    expected = theory.predict("relu", 2.0, depth=4, width=32, mc_samples=4).to_dict()
    assert doc == json.loads(json.dumps(expected))
    assert doc["chi"] == pytest.approx(1.0, abs=1e-3)


def test_theory_table_and_plot(monkeypatch, capsys, tmp_path: Path) -> None:
    png = tmp_path / "chi.png"
    code, out, err = _cli(monkeypatch, capsys, "theory", "--activation", "sigmoid", "--sigma-w2", "1",
                          "--depth", "3", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.0557" in out and "ordered" in out and "saved" in err


@pytest.mark.parametrize("args", [
    ["--activation", "tanh", "--sigma-w2", "-1", "--depth", "3"],
    ["--activation", "tanh", "--sigma-w2", "1", "--depth", "0"],
    ["--activation", "tanhh", "--sigma-w2", "1", "--depth", "3"],
    ["--activation", "maxout", "--init", "he_normal", "--depth", "3"],
    ["--activation", "tanh", "--depth", "3"],
    ["--activation", "tanh", "--init", "he_normal", "--sigma-w2", "1", "--depth", "3"],
    ["--activation", "tanh", "--init", "normal:0.1", "--depth", "3"],
    ["--activation", "tanh", "--sigma-w2", "1", "--depth", "3", "--plot", "/nonexistent/dir/x.png"],
])
def test_theory_bad_input_exits_2_with_one_line(monkeypatch, capsys, args: list[str]) -> None:
    code, out, err = _cli(monkeypatch, capsys, "theory", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


def test_decay_table_json_and_plot(monkeypatch, capsys, tmp_path: Path) -> None:
    code, out, _ = _cli(monkeypatch, capsys, "decay", "--activation", "sigmoid", "--x", "0", "--steps", "6")
    assert code == 0 and "0.000244" in out  # 0.25^6
    code, out, _ = _cli(monkeypatch, capsys, "decay", "--activation", "sigmoid", "--activation", "tanh",
                        "--x", "0", "--x", "2", "--steps", "3", "--json", "--plot", str(tmp_path / "d.png"))
    chains = json.loads(out)["chains"]
    assert code == 0 and len(chains) == 4 and (tmp_path / "d.png").stat().st_size > 0
    tanh2 = next(c for c in chains if c["activation"] == "tanh" and c["x"] == 2)
    assert tanh2["products"] == pytest.approx([(1 - np.tanh(2.0) ** 2) ** n for n in (1, 2, 3)])
    code, _, err = _cli(monkeypatch, capsys, "decay", "--activation", "maxout", "--x", "0")
    assert code == 2 and err.count("\n") == 1


def test_measured_ratio_is_mean_square_of_p_grad(tanh_run) -> None:
    run, grads = tanh_run
    measured = theory.measured_ratio(run)
    assert measured.step == 0 and measured.layers == tuple(grads)
    expected = [g.double().square().mean().item() for g in grads.values()]  # from p.grad itself
    np.testing.assert_allclose(measured.mean_square, expected, rtol=1e-5)
    assert measured.ratio[-1] == 1.0
    assert measured.ratio[0] == pytest.approx(measured.mean_square[0] / measured.mean_square[-1])


def test_predicted_vs_measured_figure(tanh_run, tmp_path: Path) -> None:
    run, _ = tanh_run
    result = theory.predict_for_run(run, mc_samples=4)
    assert result.depth == 5 and result.sigma_w2 == pytest.approx(1.0)
    fig = predicted_vs_measured(run, result)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    predicted = next(v for k, v in lines.items() if k.startswith("mean field"))
    measured = next(v for k, v in lines.items() if k.startswith("measured"))
    np.testing.assert_allclose(predicted.get_ydata(), result.per_layer_ratio)
    np.testing.assert_allclose(measured.get_ydata(), theory.measured_ratio(run).ratio)
    assert len(ax.collections) == 1  # the Monte Carlo band
    fig.savefig(tmp_path / "pvm.png")
    short = theory.predict("tanh", 1.0, depth=3)
    with pytest.raises(GradprobeError, match="depth"):
        predicted_vs_measured(run, short)


def test_chi_vs_sigma_figure() -> None:
    fig = chi_vs_sigma(["relu", "linear"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    relu = next(line for line in ax.get_lines() if line.get_label() == "relu")
    x, y = relu.get_xdata(), relu.get_ydata()
    np.testing.assert_allclose(y, x**2 / 2, rtol=1e-9)  # relu chi = sigma_w^2 / 2
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.get_lines())  # edge of chaos
    he_marker = [line for line in ax.get_lines() if len(line.get_xdata()) == 1
                 and line.get_xdata()[0] == pytest.approx(np.sqrt(2.0))]
    assert he_marker and he_marker[0].get_ydata()[0] == pytest.approx(1.0, abs=1e-3)

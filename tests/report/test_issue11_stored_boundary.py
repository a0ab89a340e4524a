"""Issue 11: the decision-boundary grid is stored at run time; reports read it without data or models."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from gradprobe import plots
from gradprobe.data.datasets import load_dataset
from gradprobe.report.boundary import boundary_grid
from gradprobe.report.html import write_report
from gradprobe.store.reader import Run, load_run
from gradprobe.train.config import RunConfig
from gradprobe.train.experiment import load_experiment
from gradprobe.train.predict import load_model
from gradprobe.train.runner import run_one

_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}



class _Forbidden(Exception):
    """Raised by the patched data and model loaders (no library code catches it)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """A binary run (one sigmoid logit, with a test split) and a 3-class softmax run (float64)."""
    store = tmp_path_factory.mktemp("boundary-store")
    circles = load_experiment("circles-deep", ["train.epochs=2", "data.n_samples=160",
                                               "data.test_fraction=0.25"]).runs[2]  # relu
    spiral = load_experiment("spiral", ["train.iterations=30"]).runs[1]  # relu
    return [load_run(str(run_one(cfg, store).run_id), store) for cfg in (circles, spiral)]


def _forward(state: dict[str, torch.Tensor], activation: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities (n, C) of the stored MLP on ``x`` (n, 2), in float64 NumPy."""
    h = x.astype(np.float64)  # (n, 2)
    n_linear = len([k for k in state if k.endswith(".weight")])
    for i in range(n_linear):
        w = state[f"layers.{2 * i}.weight"].double().numpy()  # (out, in)
        b = state[f"layers.{2 * i}.bias"].double().numpy()  # (out,)
        h = h @ w.T + b
        if i < n_linear - 1:
            h = _ACT[activation](h)
    if h.shape[1] == 1:
        p = _ACT["sigmoid"](h)
        return np.concatenate([1 - p, p], axis=1)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_stored_grid_equals_the_saved_models_predictions(runs: list[Run]) -> None:
    for run in runs:
        cfg = RunConfig.model_validate(run.config)
        data = load_dataset(cfg.data)
        x = np.concatenate([data.x_train.numpy()] + ([] if data.x_test is None else [data.x_test.numpy()]))
        y = np.concatenate([data.y_train.numpy()] + ([] if data.y_test is None else [data.y_test.numpy()]))
        lo, hi = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
        pad = 0.1 * (hi - lo)
        xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 200)
        ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 200)
        state = torch.load(run.path / "model.pt", map_location="cpu", weights_only=True)
        gx, gy = np.meshgrid(xs, ys)  # (200, 200) each: row i is ys[i]
        expected = _forward(state, cfg.model.activation, np.column_stack([gx.ravel(), gy.ravel()]))
        grid = boundary_grid(run)
        assert grid.arm == run.meta["arm"] == "relu"
        np.testing.assert_allclose(grid.xs, xs, rtol=1e-12)
        np.testing.assert_allclose(grid.ys, ys, rtol=1e-12)
        assert grid.probs.shape == (200, 200, 2 if cfg.data.name == "circles" else 3)
        assert grid.probs.dtype == np.float32  # stored like stat values
        tol = 1e-6 if cfg.train.dtype == "float64" else 2e-5  # float32 rounding; float32 forward too
        np.testing.assert_allclose(grid.probs.reshape(-1, grid.probs.shape[-1]), expected, atol=tol)
        np.testing.assert_array_equal(grid.points, x.astype(np.float64))
        np.testing.assert_array_equal(grid.labels, y)
        accuracy = float((_forward(state, cfg.model.activation, x).argmax(axis=1) == y).mean())
        assert grid.accuracy == pytest.approx(accuracy, abs=1e-12)
        assert len(grid.points) == (160 if cfg.data.name == "circles" else 300)  # circles: train + test points


def test_report_reads_only_the_store(runs: list[Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [boundary_grid(r) for r in runs]
    calls: list[str] = []

    def refuse(name: str) -> Callable[..., object]:
        def _refused(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise _Forbidden(f"{name} called while writing a report")
        return _refused

    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("gradprobe") and hasattr(module, "load_dataset"):
            monkeypatch.setattr(module, "load_dataset", refuse(f"{module_name}.load_dataset"))
    with pytest.raises(_Forbidden, match="called while writing a report"):
        load_model(runs[0])  # the patches do cut off the model and the data
    calls.clear()

    page, figures = write_report(runs[:1], tmp_path)  # the whole report of the binary run
    assert page.is_file() and tmp_path / "09-decision-boundary.png" in figures
    for run, grid in zip(runs, expected):
        fig = plots.decision_boundary([boundary_grid(run)])
        mesh = np.asarray(fig.axes[0].collections[0].get_array()).reshape(200, 200)
        np.testing.assert_array_equal(mesh, grid.predicted)
    assert calls == []

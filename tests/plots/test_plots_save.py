"""save_figures / save_decay_figures, the decision boundary, histogram ridges and theory curves."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from gradprobe import plots
from gradprobe.data.datasets import load_dataset
from gradprobe.errors import GradprobeError
from gradprobe.models import activation_spec
from gradprobe.plots.histograms import RIDGE_HEIGHT
from gradprobe.report.boundary import boundary_grid
from gradprobe.report.figures import CAPTIONS, save_decay_figures, save_figures
from gradprobe.store import Run, query
from gradprobe.theory import activation_curve, derivative_chain
from gradprobe.train import predict
from gradprobe.train.config import DecayConfig
from gradprobe.train.experiment import load_experiment
from gradprobe.train.predict import class_probabilities, load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_files(paths: list[Path], stems: list[str], formats: tuple[str, ...]) -> None:
    assert [p.name for p in paths] == [f"{s}.{f}" for s in stems for f in formats]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000, path
        if path.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        else:
            assert ET.fromstring(data).tag.endswith("svg")
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".tmp-")]


def test_save_figures_circles_names(circles: list[Run], tmp_path: Path) -> None:
    paths = save_figures(circles, tmp_path / "figs", formats=("png",))  # PNG only: keep it fast
    arms = [r.meta["arm"] for r in circles]
    stems = ["01-loss-accuracy", "02-grad-over-time", "03-gradient-flow", "04-grad-heatmap",
             "06-weight-stats", "07-grad-mean-std-loss", "08-unit-health",
             "09-decision-boundary"]
    stems += [f"10-hist-grad-{a}" for a in arms] + [f"11-hist-weight-{a}" for a in arms]
    stems += [f"12-unit-death-{a}" for a in arms]
    _check_files(paths, stems, ("png",))
    assert all(s in CAPTIONS or s.rsplit("-", 1)[0] in CAPTIONS for s in stems)


def test_save_figures_spiral_png_and_svg(spiral: list[Run], tmp_path: Path) -> None:
    paths = save_figures(spiral, tmp_path)
    # spiral records no grad mean/std, no weight mean/std, no activations
    stems = ["01-loss-accuracy", "02-grad-over-time", "03-gradient-flow", "04-grad-heatmap",
             "05-grad-sum-abs-per-shape", "09-decision-boundary",
             "10-hist-grad-sigmoid", "10-hist-grad-relu",
             "11-hist-weight-sigmoid", "11-hist-weight-relu"]
    _check_files(paths, stems, ("png", "svg"))


def test_save_figures_rejects_bad_format_before_writing(circles: list[Run],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "none"
    with pytest.raises(GradprobeError, match="formats: 'gif'"):
        save_figures(circles, out, formats=("png", "gif"))
    assert not out.exists()
    with pytest.raises(GradprobeError, match="runs: the list is empty"):
        save_figures([], out)


def test_decision_boundary_grid_agrees_with_model(spiral: list[Run]) -> None:
    run = spiral[1]
    grid = boundary_grid(run)
    model, _ = load_model(run)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 200, 5), rng.integers(0, 200, 5)
    points = np.column_stack([grid.xs[cols], grid.ys[rows]])
    expected = class_probabilities(model, points)
    np.testing.assert_allclose(grid.probs[rows, cols], expected, rtol=1e-5, atol=1e-7)
    assert grid.points.shape == (300, 2) and set(np.unique(grid.labels)) == {0, 1, 2}
    fig = plots.decision_boundary([boundary_grid(r) for r in spiral])
    mesh = fig.axes[1].collections[0]
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(200, 200), grid.predicted)
    assert "relu" in fig.axes[1].get_title() and fig.axes[0].get_xlabel() == "x1"


def test_boundary_rejects_bad_resolution(circles: list[Run]) -> None:
    model, cfg = load_model(circles[0])
    with pytest.raises(GradprobeError, match="resolution: 1"):
        predict.boundary_grid(model, load_dataset(cfg.data), resolution=1)


def test_histogram_ridges_are_the_stored_counts(plot_store: Path, circles: list[Run]) -> None:
    run = circles[0]
    fig = plots.histogram_ridges(run, kind="grad", layers=["layers.10", "layers.2"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["layers.2", "layers.10"]
    df = query(f"SELECT step, edges, counts FROM hists WHERE run_id = '{run.run_id}' AND "
               "kind = 'grad' AND tensor = 'weight' AND layer = 'layers.2' ORDER BY step",
               plot_store)
    ridges = {p.get_gid(): p for p in fig.axes[0].patches if p.get_gid()}
    assert sorted(ridges) == sorted(f"layers.2@{s}" for s in df["step"])
    n = len(df)
    for i, row in enumerate(df.itertuples()):
        values, edges, baseline = ridges[f"layers.2@{row.step}"].get_data()
        counts = np.asarray(row.counts, np.float64)
        base = n - 1 - i
        np.testing.assert_allclose(edges, np.asarray(row.edges, np.float64))
        np.testing.assert_allclose(values, base + counts / counts.max() * RIDGE_HEIGHT)
        assert baseline == base
    with pytest.raises(GradprobeError, match="no grad histograms"):
        plots.histogram_ridges(run, kind="grad", tensor="running_mean")


@pytest.mark.parametrize("spec", ["sigmoid", "tanh", "leaky_relu:0.1", "gelu"])
def test_activation_curve_matches_autograd(spec: str) -> None:
    curve = activation_curve(spec, (-4.0, 4.0), n=81, tangent_at=0.5, tangent_span=None)  # tangent over the grid
    x = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64, requires_grad=True)
    y = activation_spec(spec).module().double()(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(curve["f"], y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(curve["df"], grad.numpy(), rtol=1e-9, atol=1e-12)
    # the tangent touches f at 0.5 with slope f'(0.5)
    slope = np.polyfit(curve["x"], curve["tangent"], 1)[0]
    i = int(np.argmin(np.abs(curve["x"] - 0.5)))
    assert curve["x"][i] == pytest.approx(0.5)
    assert curve["tangent"][i] == pytest.approx(curve["f"][i])
    assert slope == pytest.approx(curve["df"][i])


def test_activation_curve_rejects_bad_input() -> None:
    with pytest.raises(GradprobeError, match="decay.interval"):
        activation_curve("sigmoid", (1.0, -1.0))
    with pytest.raises(GradprobeError, match="maxout"):
        activation_curve("maxout")


def test_derivative_decay_draws_the_chains_on_log_axis() -> None:
    chains = [{"activation": a, "x": x, "products": derivative_chain(a, x, 8)}
              for a in ("sigmoid", "relu") for x in (0.0, 2.0)]
    fig = plots.derivative_decay(chains)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    sigmoid0 = next(line for line in ax.get_lines() if line.get_label() == "sigmoid, x=0")
    np.testing.assert_allclose(sigmoid0.get_ydata(), 0.25 ** np.arange(1, 9))
    relu0 = next(line for line in ax.get_lines() if line.get_label().startswith("relu, x=0"))
    assert np.isnan(relu0.get_ydata()).all() and "not drawable" in relu0.get_label()


def test_activation_figures_use_the_curves() -> None:
    curves = [activation_curve(a) for a in ("sigmoid", "tanh")]
    fig = plots.activation_curves(curves)
    f_ax, d_ax = fig.axes[:2]
    line = next(line for line in f_ax.get_lines() if line.get_label() == "sigmoid(x)")
    np.testing.assert_array_equal(line.get_ydata(), curves[0]["f"])
    np.testing.assert_array_equal(d_ax.get_lines()[0].get_ydata(), curves[0]["df"])
    overlay = plots.activation_overlay(curves)
    colours = {line.get_label(): line.get_color() for line in overlay.axes[0].get_lines()}
    assert colours["sigmoid"] != colours["tanh"]
    with pytest.raises(GradprobeError, match="curves: the list is empty"):
        plots.activation_curves([])


def test_save_decay_figures(tmp_path: Path) -> None:
    decay = load_experiment("sigmoid-decay").config.decay
    assert isinstance(decay, DecayConfig)
    paths = save_decay_figures(decay, tmp_path)
    _check_files(paths, ["01-activation-curves", "02-activation-overlay", "03-derivative-decay"],
                 ("png", "svg"))
    with pytest.raises(GradprobeError, match="maxout"):
        save_decay_figures(DecayConfig(activations=["maxout"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

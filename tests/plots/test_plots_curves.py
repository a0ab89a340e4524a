"""Figures over training: the drawn data equals the store's records read back with DuckDB SQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from gradprobe import plots
from gradprobe.errors import GradprobeError
from gradprobe.plots.style import PALETTE, order_layers
from gradprobe.store import Run, query

_SQL: dict[Path, pd.DataFrame] = {}


def _sql_series(store: Path, run: Run, kind: str, stat: str, layer: str,
                tensor: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one stat of one run, read by DuckDB (not by our reader)."""
    if store not in _SQL:  # one query per store; the tests only read it
        _SQL[store] = query("SELECT run_id, step, layer, tensor, kind, stat, value FROM stats "
                            "ORDER BY run_id, step", store)
    df = _SQL[store]
    sel = df[(df["run_id"] == run.run_id) & (df["kind"] == kind) & (df["stat"] == stat)
             & (df["layer"] == layer) & (df["tensor"] == tensor)]
    return sel["step"].to_numpy(), sel["value"].to_numpy(np.float64)


def _lines(ax, label: str):
    found = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(found) == 1, f"expected one line labelled {label!r}, got {len(found)}"
    return found[0]


def _all_axes_labelled(fig: Figure) -> None:
    """Every drawn panel has a title, and its column an x label and its row a y label."""
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert panels and fig.get_suptitle().strip()
    for ax in panels:
        assert ax.get_title().strip(), ax
        spec = ax.get_subplotspec()
        column = [a for a in panels if a.get_subplotspec().colspan == spec.colspan]
        row = [a for a in panels if a.get_subplotspec().rowspan == spec.rowspan]
        assert any(a.get_xlabel().strip() for a in column), ax.get_title()
        assert any(a.get_ylabel().strip() for a in row), ax.get_title()


def test_order_layers_is_numeric_not_lexicographic() -> None:
    assert order_layers(["layers.10", "layers.2", "layers.0", "layers.2"]) == [
        "layers.0", "layers.2", "layers.10"]
    weights = ["enc.weight", "dec.weight"]  # model order wins over any sort
    assert order_layers(["dec", "enc"], weights) == ["enc", "dec"]


def test_grad_over_time_lines_equal_stored_mean_abs(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.grad_over_time(circles)
    weight_layers = circles[0].summary["weight_layers"]
    assert len(weight_layers) == 6
    for ax, run in zip(fig.axes, circles):
        assert ax.get_yscale() == "log"
        assert run.meta["arm"] in ax.get_title()
        for name in weight_layers:
            layer = name.removesuffix(".weight")
            steps, values = _sql_series(plot_store, run, "grad", "mean_abs", layer)
            line = _lines(ax, layer)
            np.testing.assert_array_equal(line.get_xdata(), steps)
            np.testing.assert_allclose(line.get_ydata(), values, rtol=1e-6)
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels == [w.removesuffix(".weight") for w in weight_layers]  # depth order


def test_gradient_flow_follows_depth_and_matches_records(plot_store: Path,
                                                         circles: list[Run]) -> None:
    fig = plots.gradient_flow(circles, moments=("init", "end"))
    init_ax, end_ax = fig.axes[:2]
    assert init_ax.get_yscale() == "log" and end_ax.get_yscale() == "log"
    ticks = [t.get_text().split("\n")[1] for t in init_ax.get_xticklabels()]
    assert ticks == [f"layers.{i}" for i in range(0, 12, 2)]  # layers.10 last, not second
    for run in circles:
        line = _lines(init_ax, run.meta["arm"])
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 7))
        expected = []
        for name in run.summary["weight_layers"]:
            steps, values = _sql_series(plot_store, run, "grad", "mean_abs",
                                        name.removesuffix(".weight"))
            expected.append(values[steps == steps.min()][0])
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)
    assert "init (step 0)" == init_ax.get_title()


def test_gradient_flow_rejects_unknown_moment(circles: list[Run]) -> None:
    with pytest.raises(GradprobeError, match="moments: 'bogus'"):
        plots.gradient_flow(circles, moments=("bogus",))


def test_heatmap_is_log10_pivot_with_shared_scale(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.grad_heatmap(circles)
    meshes = [c for ax in fig.axes if ax.get_label() != "<colorbar>" for c in ax.collections
              if isinstance(c, QuadMesh)]
    assert len(meshes) == len(circles)
    layers = [w.removesuffix(".weight") for w in circles[0].summary["weight_layers"]]
    for mesh, run in zip(meshes, circles):
        df = query(f"SELECT layer, step, value FROM stats WHERE run_id = '{run.run_id}' AND "
                   "kind = 'grad' AND stat = 'mean_abs' AND tensor = 'weight'", plot_store)
        pivot = df.pivot(index="layer", columns="step", values="value").loc[layers]
        expected = np.log10(pivot.to_numpy(np.float64))
        drawn = np.asarray(mesh.get_array()).reshape(expected.shape)
        np.testing.assert_allclose(drawn, expected, rtol=1e-6)
    assert len({(m.norm.vmin, m.norm.vmax) for m in meshes}) == 1
    assert any(ax.get_label() == "<colorbar>" and ax.get_ylabel() for ax in fig.axes)


def test_arm_colours_agree_across_figures(circles: list[Run]) -> None:
    arms = [r.meta["arm"] for r in circles]
    expected = dict(zip(arms, PALETTE))
    loss = plots.loss_accuracy(circles)
    flow = plots.gradient_flow(circles)
    for fig in (loss, flow):
        for arm, colour in expected.items():
            assert _lines(fig.axes[0], arm).get_color() == colour
    for fig in (plots.grad_over_time(circles), plots.grad_heatmap(circles),
                plots.unit_health(circles)):
        titled = {ax.get_title(): ax.title.get_color() for ax in fig.axes if ax.get_title()}
        for arm, colour in expected.items():
            assert titled[f"arm: {arm}"] == colour


def test_loss_accuracy_draws_the_stored_metrics(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.loss_accuracy(circles)
    loss_ax, acc_ax = fig.axes[:2]
    for run in circles:
        df = query(f"SELECT step, metric, value FROM metrics WHERE run_id = '{run.run_id}' "
                   "AND split = 'train' ORDER BY step", plot_store)
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            sel = df[df["metric"] == metric].drop_duplicates("step", keep="last")
            line = _lines(ax, run.meta["arm"])
            np.testing.assert_array_equal(line.get_xdata(), sel["step"].to_numpy())
            np.testing.assert_allclose(line.get_ydata(), sel["value"].to_numpy())
    assert loss_ax.get_ylabel() and acc_ax.get_ylabel() and loss_ax.get_xlabel()


def test_every_figure_has_titles_and_axis_labels(circles: list[Run]) -> None:
    for draw in (plots.loss_accuracy, plots.grad_over_time, plots.gradient_flow,
                 plots.grad_heatmap, plots.weight_stats, plots.grad_mean_std_loss,
                 plots.unit_health):
        _all_axes_labelled(draw(circles))


def test_weight_stats_uses_epochs(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.weight_stats(circles)
    run = circles[0]
    steps, values = _sql_series(plot_store, run, "weight", "std", "layers.10")
    line = _lines(fig.axes[1], "layers.10")  # row 0 = first arm, column 1 = std
    per_epoch = int(np.ceil(1000 / 32))  # circles: 1000 points, batch 32
    np.testing.assert_allclose(line.get_xdata(), steps / per_epoch)
    np.testing.assert_allclose(line.get_ydata(), values, rtol=1e-6)
    assert fig.axes[-1].get_xlabel() == "epoch"


def test_grad_mean_std_loss_panels(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.grad_mean_std_loss(circles)
    mean_ax, std_ax, loss_ax = fig.axes[:3]
    assert std_ax.get_yscale() == "log" and mean_ax.get_yscale() == "linear"
    _, means = _sql_series(plot_store, circles[0], "grad", "mean", "layers.0")
    np.testing.assert_allclose(_lines(mean_ax, "layers.0").get_ydata(), means, rtol=1e-6)
    assert all(ax.get_ylabel() for ax in (mean_ax, std_ax, loss_ax))


def test_unit_health_draws_dead_fraction_of_relu(plot_store: Path, circles: list[Run]) -> None:
    fig = plots.unit_health(circles)
    relu = next(r for r in circles if r.meta["arm"] == "relu")
    ax = next(a for a in fig.axes if a.get_title() == "arm: relu")
    _, dead = _sql_series(plot_store, relu, "activation", "dead_frac", "layers.1", "output")
    assert len(dead) > 0
    np.testing.assert_allclose(_lines(ax, "layers.1 dead_frac").get_ydata(), dead, rtol=1e-6)
    low, high = ax.get_ylim()
    assert low < 0 and high > 1

"""The report's Diagnosis tab in Chromium: the engine's verdicts, the gradient flow as stored, alert markers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gradprobe import plots
from gradprobe import records as R
from gradprobe.alerts import GradprobeAlert
from gradprobe.diagnose.engine import diagnose
from gradprobe.errors import GradprobeError
from gradprobe.report.html import page_data, write_html
from gradprobe.store import RunWriter, query
from gradprobe.store.layout import COLUMNS
from gradprobe.store.reader import Run, list_runs, load_run
from gradprobe.theory import predict, sigma_w2_for_init
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_experiment

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM = Path("/usr/bin/chromium")
# Deep sigmoid with N(0, 1) weights (chi = 0.40 per layer: vanishing) beside ReLU with He init (chi = 1).
EXPERIMENT = """
name: flow-check
data: {name: circles, n_samples: 320, factor: 0.5, noise: 0.1, seed: 0}
model: {depth: 6, width: 16, bias_init: 0.0}
optimizer: {name: sgd, lr: 0.05}
train: {loss: bce, batch_size: 32, epochs: 3, eval_every: epoch}
record: {every: 2}
arms:
  - {name: sigmoid, model: {activation: sigmoid, init: "normal:1"}}
  - {name: relu-he, model: {activation: relu, init: he_normal}}
"""
ALERT_STEPS = (6, 20)  # of the sigmoid run
RELU_ALERT = 12
ALERT_COLUMNS = COLUMNS["alerts"]
TRACES = "id => document.getElementById(id).data.map(t => ({meta: t.meta, x: t.x, y: t.y, text: t.text}))"
SHAPES = "id => (document.getElementById(id).layout.shapes || []).map(s => ({x: s.x0, xref: s.xref}))"


@pytest.fixture(scope="module")
def flow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diagnosis-store")
    source = root / "flow-check.yaml"
    source.write_text(EXPERIMENT)
    with warnings.catch_warnings():  # the live alerts of the sigmoid run: not what is tested here
        warnings.simplefilter("ignore", GradprobeAlert)
        run_experiment(load_experiment(str(source)), root / "store")
    return root / "store"


@pytest.fixture(scope="module")
def runs(flow_store: Path) -> list[Run]:
    """The sigmoid run, then the ReLU run."""
    table = list_runs(flow_store).sort_values("arm", ascending=False)
    return [load_run(r, flow_store) for r in table["run_id"]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _alerts(run: Run) -> pd.DataFrame:
    """Synthetic alerts, two for the sigmoid run and one for the ReLU run (stands in for ``Run.alerts``)."""
    if run.meta["arm"] != "sigmoid":
        return pd.DataFrame({"step": [RELU_ALERT], "layer": ["layers.4.weight"], "verdict": ["dead"],
                             "previous": [None], "message": ["62% of layers.5's units dead"], "value": [0.62]})
    return pd.DataFrame({"step": list(ALERT_STEPS), "layer": ["layers.0.weight", "layers.2.weight"],
                         "verdict": ["vanishing", "vanishing"], "previous": [None, "healthy"],
                         "message": [f"<b>layers.{i}</b> started vanishing at step {s}"
                                     for i, s in zip((0, 2), ALERT_STEPS)],
                         "value": [0.02, 0.03]})


@pytest.fixture(scope="module")
def page(browser: Any, runs: list[Run], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The report of both runs, with the synthetic alerts, loaded in Chromium; records console errors."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Run, "alerts", _alerts)
        path = write_html(runs, tmp_path_factory.mktemp("diagnosis-report") / "report.html")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors, page.requests = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("#plot-flow .main-svg")
    page.report_uri = path.as_uri()
    yield page
    page.close()


def _sql(store: Path, kind: str, tensor: str) -> pd.DataFrame:
    """mean_abs of one kind per run, step and layer, read by DuckDB rather than our reader."""
    return query(f"SELECT run_id, step, layer, value FROM stats WHERE kind = '{kind}' AND "
                 f"stat = 'mean_abs' AND tensor = '{tensor}' ORDER BY run_id, step", store)


@pytest.mark.browser
def test_diagnosis_tab_is_shown_on_load(page: Any) -> None:
    assert page.eval_on_selector("#tabs button", "b => b.dataset.tab") == "diagnosis"  # the first tab
    assert page.get_attribute("#tabs button[data-tab=diagnosis]", "aria-selected") == "true"
    assert page.is_visible("#tab-diagnosis")
    for other in ("series", "metrics", "heatmap", "hist", "runs"):
        assert page.is_hidden(f"#tab-{other}")


@pytest.mark.browser
def test_verdicts_layers_and_remedies_are_the_engines(page: Any, runs: list[Run]) -> None:
    verdicts = {}
    for run in runs:
        d = diagnose(run)  # the engine, called here independently of the page
        verdicts[run.meta["arm"]] = d.verdict
        card = f"article.diag[data-run='{run.run_id}']"
        assert page.text_content(f"{card} h3 .verdict") == d.verdict
        summary = page.text_content(f"#diag-summary tr[data-run='{run.run_id}'] .verdict")
        assert summary == d.verdict
        rows = page.eval_on_selector_all(f"{card} table.layers tr[data-layer]", "rs => rs.map(r => "
                                         "[r.dataset.layer, r.querySelector('.verdict').textContent])")
        assert rows == [[e.layer, e.verdict] for e in d.layers]
        numbers = page.eval_on_selector_all(f"{card} table.layers tr[data-layer]", "rs => rs.map(r => "
                                            "[...r.children].slice(2, 4).map(c => c.textContent))")
        lines = d.compact(width=200).splitlines()  # the terminal's table: layer, verdict, number, window
        for e, (number, window) in zip(d.layers, numbers):
            line = next(li for li in lines if li.split()[:2] == [e.layer, e.verdict])
            assert line.split()[2:] == [*number.split(), *window.split()]
        remedies = page.eval_on_selector_all(f"{card} ol", "os => os.map(o => [...o.children].map(li => "
                                             "li.textContent))")
        flagged = [e for e in d.layers if e.remedies]
        if flagged:  # every vanishing layer of this run has one ranked list: the page shows it once
            assert len({tuple(e.remedies) for e in flagged}) == 1
            assert remedies == [flagged[0].remedies]
        else:
            assert remedies == []
    assert verdicts == {"sigmoid": "vanishing", "relu-he": "healthy"}


@pytest.mark.browser
def test_flow_chart_plots_the_stored_gradients_and_errors(page: Any, runs: list[Run], flow_store: Path) -> None:
    traces = page.evaluate(TRACES, "plot-flow")
    grads, deltas = _sql(flow_store, "grad", "weight"), _sql(flow_store, "delta", "output")
    checked = 0
    for run in runs:
        layers = run.summary["weight_layers"]
        modules = [w.removesuffix(".weight") for w in layers]
        own = grads[grads.run_id == run.run_id]
        steps = np.unique(own["step"])
        middle = steps[np.argmin(np.abs(steps - (steps[0] + steps[-1]) / 2))]
        for moment, step in zip(("init", "middle", "end"), (steps[0], middle, steps[-1])):
            drawn = {t["meta"]["quantity"]: t for t in traces
                     if t["meta"]["run"] == run.run_id and t["meta"]["moment"] == moment}
            for quantity, table in (("grad", own), ("delta", deltas[deltas.run_id == run.run_id])):
                trace = drawn[quantity]
                assert trace["meta"]["step"] == step and trace["x"] == list(range(1, len(layers) + 1))
                assert trace["text"] == layers
                at = table[table.step == step].set_index("layer")["value"]
                np.testing.assert_array_equal(np.float32(trace["y"]), at.loc[modules].to_numpy(np.float32))
                checked += 1
            assert ("predicted" in drawn) == (moment == "init")
    assert checked == 2 * 3 * 2


@pytest.mark.browser
def test_mean_field_line_follows_chi(page: Any, runs: list[Run]) -> None:
    traces = page.evaluate(TRACES, "plot-flow")
    for run, activation, init in ((runs[0], "sigmoid", "normal:1"), (runs[1], "relu", "he_normal")):
        chi = predict(activation, sigma_w2_for_init(init, 16), depth=7).chi
        line = next(t["y"] for t in traces if t["meta"]["run"] == run.run_id and t["meta"]["quantity"] == "predicted")
        grad = next(t["y"] for t in traces if t["meta"]["run"] == run.run_id and t["meta"]["moment"] == "init")
        assert line[-1] is None  # the output matrix is not a square layer: not predicted
        assert line[-2] == pytest.approx(grad[-2], rel=1e-6)  # anchored at the last hidden matrix
        expected = grad[-2] * chi ** ((5 - np.arange(6)) / 2)  # chi^((L-1-l)/2), L = 7
        np.testing.assert_allclose(line[:-1], expected, rtol=1e-5)
    assert predict("relu", sigma_w2_for_init("he_normal", 16), depth=7).chi == pytest.approx(1.0)


def _marks(page: Any, plot: str) -> dict[str, tuple[list[int], list[str]]]:
    """``{run id: (steps, hover texts)}`` of the alert markers of one plot."""
    return {t["meta"]["run"]: (t["x"], t["text"]) for t in page.evaluate(TRACES, plot) if t["meta"].get("alerts")}


@pytest.mark.browser
def test_alerts_are_marked_on_every_time_axis(page: Any, runs: list[Run]) -> None:
    sigmoid, relu = runs
    expected = _alerts(sigmoid)
    cards = page.eval_on_selector_all(f"article.diag[data-run='{sigmoid.run_id}'] table.alerts td",
                                      "ts => ts.map(t => t.textContent)")
    assert cards[::4] == [str(s) for s in ALERT_STEPS] and cards[3::4] == expected["message"].tolist()
    for tab, plot, side in (("series", "plot-series", True), ("metrics", "plot-metrics", False),
                            ("heatmap", "plot-heatmap", True)):
        page.click(f"#tabs button[data-tab={tab}]")
        page.wait_for_selector(f"#{plot} .main-svg")
        marks = _marks(page, plot)
        assert marks.keys() == {sigmoid.run_id, relu.run_id}
        assert marks[sigmoid.run_id][0] == list(ALERT_STEPS) and marks[relu.run_id][0] == [RELU_ALERT]
        for text, message in zip(marks[sigmoid.run_id][1], expected["message"]):  # escaped for Plotly
            assert message.replace("<", "&lt;").replace(">", "&gt;") in text
        # side by side, each run's lines sit on its own subplot; overlaid, on the one axis
        shapes = sorted((s["x"], s["xref"]) for s in page.evaluate(SHAPES, plot))
        assert shapes == [(6, "x"), (RELU_ALERT, "x2" if side else "x"), (20, "x")]
    page.click("#tabs button[data-tab=series]")
    last = len(page.evaluate(TRACES, "plot-series")) - 2  # the sigmoid run's markers, before the ReLU run's
    page.evaluate(f"() => Plotly.Fx.hover('plot-series', [{{curveNumber: {last}, pointNumber: 0}}], 'xy')")
    assert "started vanishing at step 6" in page.text_content("#plot-series .hoverlayer")
    page.click("#tabs button[data-tab=diagnosis]")
    assert page.errors == []
    assert page.requests == [page.report_uri]


def test_a_run_without_gradients_or_alerts_says_so(tmp_path: Path) -> None:
    frame = pd.DataFrame({"step": [0, 1], "layer": "l", "tensor": "output", "kind": R.ACTIVATION,
                          "stat": R.MEAN, "value": [0.1, 0.2]})
    with RunWriter(tmp_path, "no-grads", config={}, env={}, meta={"experiment": "e", "arm": "a"}) as writer:
        writer.add_stats(frame)
        writer.finish(R.FINISHED, {})
    run = Run(writer.path)
    assert run.alerts().empty and list(run.alerts().columns) == list(ALERT_COLUMNS)
    with pytest.raises(GradprobeError) as refused:
        diagnose(run)
    data = page_data([run])["runs"][0]
    assert data["diagnosis"] == {"error": str(refused.value)}
    assert data["flow"] is None and data["alerts"] == []


def test_flow_figure_draws_errors_and_the_prediction(runs: list[Run], flow_store: Path) -> None:
    fig = plots.gradient_flow(runs)
    init = fig.axes[0]
    deltas = _sql(flow_store, "delta", "output")
    for run in runs:
        arm = run.meta["arm"]
        lines = {line.get_label(): line for line in init.get_lines()}
        modules = [w.removesuffix(".weight") for w in run.summary["weight_layers"]]
        at = deltas[(deltas.run_id == run.run_id) & (deltas.step == 0)].set_index("layer")["value"]
        np.testing.assert_allclose(lines[f"{arm}: |delta|"].get_ydata(), at.loc[modules], rtol=1e-6)
        predicted = lines[f"{arm}: mean field"].get_ydata()
        assert np.isnan(predicted[-1])
        np.testing.assert_allclose(predicted[-2], lines[arm].get_ydata()[-2], rtol=1e-6)
    assert f"{runs[0].meta['arm']}: mean field" not in [line.get_label() for line in fig.axes[-1].get_lines()]

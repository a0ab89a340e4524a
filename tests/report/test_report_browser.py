"""report.html in real headless Chromium: offline, no errors, plots show the store's values, controls work."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradprobe.report.html import write_html, write_report
from gradprobe.store.reader import Run

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]

TRACES = "id => document.getElementById(id).data.map(t => ({meta: t.meta, x: t.x, y: t.y, z: t.z}))"


class Page:
    """A loaded report page that records console errors, requests and dialogs."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("#plot-flow .main-svg")  # the Diagnosis tab is shown on load
        self.tab("series")
        self.page.wait_for_selector("#plot-series .main-svg")

    def traces(self, plot: str) -> list[dict[str, Any]]:
        return self.page.evaluate(TRACES, plot)

    def tab(self, name: str) -> None:
        self.page.click(f"#tabs button[data-tab={name}]")
        self.page.wait_for_selector(f"#tab-{name}:not([hidden])")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _stored(run: Run, kind: str, stat: str, key: str) -> tuple[list[int], np.ndarray]:
    layer, tensor = key.rsplit(".", 1)
    frame = run.frame(kind=kind, stat=stat, layer=layer)
    frame = frame[frame.tensor == tensor]
    return frame["step"].tolist(), frame["value"].to_numpy()


def _check_series(traces: list[dict[str, Any]], runs: list[Run], kind: str, stat: str) -> None:
    by_id = {r.run_id: r for r in runs}
    for t in traces:
        steps, values = _stored(by_id[t["meta"]["run"]], kind, stat, t["meta"]["layer"])
        assert t["x"] == steps
        np.testing.assert_allclose(t["y"], values, rtol=1e-6)


def test_report_in_chromium(browser: Any, make_run, tmp_path: Path) -> None:
    runs = [make_run("exp", "a", 0), make_run("exp", "b", 0), make_run("exp", "a", 1)]
    page = Page(browser, write_html(runs, tmp_path / "report.html"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "report-series.png"), full_page=True)

    # Default view: mean |grad| of every weight matrix, one subplot per run.
    traces = page.traces("plot-series")
    assert {(t["meta"]["run"], t["meta"]["layer"]) for t in traces} == {
        (r.run_id, layer) for r in runs for layer in ("layers.0.weight", "layers.2.weight")}
    _check_series(traces, runs, "grad", "mean_abs")

    # Hover shows the exact stored value of a point.
    page.page.evaluate("() => Plotly.Fx.hover('plot-series', [{curveNumber: 0, pointNumber: 3}], 'xy')")
    hover = page.page.text_content("#plot-series .hoverlayer")
    assert f"{traces[0]['y'][3]:.7g}" in hover and "step 3" in hover

    # Dragging over the plot zooms into a range of steps.
    box = page.page.locator("#plot-series .nsewdrag").first.bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 20)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] - 20, steps=5)
    page.page.mouse.up()
    lo, hi = page.page.evaluate("() => document.getElementById('plot-series').layout.xaxis.range")
    assert 0 < lo < hi < 19

    # Choosing another statistic, layer and kind redraws with those values.
    page.page.select_option("#stat", "norm")
    page.page.select_option("#layer", "layers.2.bias")
    traces = page.traces("plot-series")
    assert len(traces) == 3 and all(t["meta"]["layer"] == "layers.2.bias" for t in traces)
    _check_series(traces, runs, "grad", "norm")
    page.page.select_option("#kind", "delta")
    traces = page.traces("plot-series")
    assert {t["meta"]["layer"] for t in traces} == {"layers.0.output", "layers.2.output"}
    _check_series(traces, runs, "delta", "norm")

    # Unticking a run removes it everywhere.
    page.page.click("#run-1")
    assert {t["meta"]["run"] for t in page.traces("plot-series")} == {runs[0].run_id, runs[2].run_id}
    page.page.click("#run-1")
    for i in range(3):  # with no run ticked the page says so instead of failing
        page.page.click(f"#run-{i}")
    assert page.traces("plot-series") == [] and "Nothing to show" in page.page.text_content("#caption")
    for i in range(3):
        page.page.click(f"#run-{i}")
    page.page.select_option("#kind", "grad")
    page.page.select_option("#stat", "norm")
    page.page.select_option("#layer", "__all__")

    page.tab("metrics")
    metrics = page.traces("plot-metrics")
    assert len(metrics) == 3
    loss = runs[0].metrics().query("metric == 'loss'")
    np.testing.assert_allclose(metrics[0]["y"], loss["value"], rtol=1e-12)

    page.tab("heatmap")
    heat = page.traces("plot-heatmap")
    assert [t["meta"]["run"] for t in heat] == [r.run_id for r in runs]
    steps, values = _stored(runs[0], "grad", "norm", "layers.2.weight")
    assert heat[0]["x"] == steps
    np.testing.assert_allclose(heat[0]["z"][2], np.log10(values), rtol=1e-5)  # rows: input first
    page.page.screenshot(path=str(ARTIFACTS / "report-heatmap.png"), full_page=True)

    page.tab("hist")
    hists = runs[1].hists().query("layer == 'layers.0'")
    bars = page.traces("plot-hist")
    assert bars[1]["y"] == hists["counts"].iloc[0].tolist()
    page.page.fill("#hist-step", "2")  # the third snapshot (step 10)
    page.page.dispatch_event("#hist-step", "input")
    bars = page.traces("plot-hist")
    assert bars[1]["meta"]["step"] == 10 and bars[1]["y"] == hists["counts"].iloc[2].tolist()
    page.page.screenshot(path=str(ARTIFACTS / "report-hist.png"), full_page=True)

    page.tab("runs")
    assert page.page.text_content("#table-config").count("model.depth") == 1
    assert "3.x" in page.page.text_content("#table-env")
    page.page.screenshot(path=str(ARTIFACTS / "report-config.png"), full_page=True)

    assert page.errors == []
    assert page.requests == [(tmp_path / "report.html").as_uri()]


def test_user_strings_are_shown_literally_and_never_run(browser: Any, make_run, tmp_path: Path) -> None:
    arm = "<script>alert(1)</script>"
    layer = '"><img src=x onerror=alert(1)>'
    run = make_run(arm, arm, 0, layers=(layer, "layers.1"), config={"note": layer})
    page = Page(browser, write_html([run], tmp_path / "report.html"))
    for tab in ("diagnosis", "metrics", "heatmap", "hist", "runs", "series"):
        page.tab(tab)
    page.page.wait_for_timeout(200)
    assert page.dialogs == []
    assert page.page.evaluate("() => document.querySelectorAll('img, #runs script').length") == 0
    assert arm in page.page.text_content("#runs") and arm in page.page.title()
    options = page.page.eval_on_selector_all("#layer option", "os => os.map(o => o.textContent)")
    assert f"{layer}.weight" in options
    legend = page.page.eval_on_selector_all("#plot-series .legendtext", "ts => ts.map(t => t.textContent)")
    assert legend == [f"{layer}.weight", "layers.1.weight"]
    page.page.screenshot(path=str(ARTIFACTS / "report-escaping.png"), full_page=True)
    page.tab("heatmap")
    ticks = page.page.eval_on_selector_all("#plot-heatmap .ytick text", "ts => ts.map(t => t.textContent)")
    assert f"{layer}.weight" in ticks
    page.tab("runs")
    assert layer in page.page.text_content("#table-config")
    assert page.errors == []
    assert page.requests == [(tmp_path / "report.html").as_uri()]


def test_figures_tab_shows_every_png_write_report_wrote(browser: Any, make_run, tmp_path: Path) -> None:
    runs = [make_run("exp", "a", 0, n_steps=6), make_run("exp", "b", 0, n_steps=6)]
    path, written = write_report(runs, tmp_path)
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) > 1 and any(p.suffix == ".svg" for p in written)  # SVGs are written, not shown
    page = Page(browser, path)
    assert page.page.eval_on_selector_all("#tabs button", "bs => bs.map(b => b.dataset.tab)")[-1] == "figures"
    page.tab("figures")
    shown = page.page.eval_on_selector_all("#tab-figures figure", """fs => fs.map(f => {
        const img = f.querySelector("img");
        return {caption: f.querySelector("figcaption").textContent, complete: img.complete,
                width: img.naturalWidth, src: img.getAttribute("src")};
    })""")
    assert [f["caption"] for f in shown] == [p.stem for p in pngs]
    for figure, png in zip(shown, pngs):  # loaded, at the width the PNG header states
        assert figure["complete"] and figure["width"] == int.from_bytes(png.read_bytes()[16:20], "big") > 0
    prefix = "data:image/png;base64,"
    assert shown[-1]["src"].startswith(prefix)
    assert base64.b64decode(shown[-1]["src"][len(prefix):], validate=True) == pngs[-1].read_bytes()
    page.page.screenshot(path=str(ARTIFACTS / "report-figures.png"))
    assert page.errors == []
    assert [r for r in page.requests if not r.startswith("data:")] == [path.as_uri()]

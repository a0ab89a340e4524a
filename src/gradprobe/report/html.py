"""One self-contained interactive ``report.html``: stored runs as JSON, drawn by inlined plotly.js.

The page needs no network: plotly.js comes from the installed ``plotly`` package and the data sit
in a ``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are escaped, so no
user-provided name (run, arm, layer, config value) can end the block or become markup. The page
script builds every text node with ``textContent``. The PNG figures written beside the page sit in
its Figures tab as ``data:`` URIs under their ``html.escape``-d file stems.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.report.diagnosis import alert_data, diagnosis_data, flow_data
from gradprobe.report.numbers import json_numbers
from gradprobe.store.atomic import atomic_write_bytes
from gradprobe.store.reader import Run

_log = logging.getLogger(__name__)

__all__ = ["MAX_HIST_STEPS", "MAX_POINTS", "REPORT_HTML", "page_data", "render_html", "write_html",
           "write_report"]

REPORT_HTML = "report.html"
MAX_POINTS = 2000  # longest series drawn; longer ones are shown at this many evenly spaced steps
MAX_HIST_STEPS = 200  # most histogram snapshots per tensor kept in the page
_TEMPLATE = Path(__file__).with_name("templates") / "report.html.tmpl"
_PLACEHOLDER = re.compile(r"\{\{(TITLE|PLOTLYJS|DATA|FIGURES)\}\}")


def _text(value: Any) -> str:
    """Return a config/summary value as display text (strings as-is, the rest as JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _flat(value: Any, prefix: str = "") -> list[list[str]]:
    """Return ``[[dotted key, text], ...]`` of a nested dict, in its order."""
    if not isinstance(value, dict):
        return [[prefix, _text(value)]]
    rows: list[list[str]] = []
    for key, sub in value.items():
        rows += _flat(sub, f"{prefix}.{key}" if prefix else str(key))
    return rows


def _pick(n: int, most: int) -> np.ndarray:
    """Return the indices kept of a length-``n`` series: all, or ``most`` evenly spaced ones."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def _series(frame: pd.DataFrame, max_points: int) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Return ``stats[kind][stat][layer] = [steps, values]``, layer order per kind, and a cut flag."""
    stats: dict[str, Any] = {}
    layers: dict[str, list[str]] = {}
    cut = False
    frame = frame.assign(key=_keys(frame))
    for (kind, stat, key), group in frame.groupby(["kind", "stat", "key"], sort=False):
        keep = _pick(len(group), max_points)
        cut |= len(keep) < len(group)
        steps = group["step"].to_numpy()[keep]
        stats.setdefault(kind, {}).setdefault(stat, {})[key] = [
            steps.tolist(), json_numbers(group["value"].to_numpy()[keep])
        ]
        if key not in layers.setdefault(kind, []):
            layers[kind].append(key)
    return stats, layers, cut


def _keys(frame: pd.DataFrame) -> list[str]:
    """Return each row's tensor path ``layer.tensor`` (just ``tensor`` for the root module)."""
    return [f"{layer}.{tensor}" if layer else tensor
            for layer, tensor in zip(frame["layer"], frame["tensor"])]


def _hists(frame: pd.DataFrame) -> dict[str, Any]:
    """Return ``hists[kind][layer] = {steps, edges, counts}`` with at most MAX_HIST_STEPS snapshots."""
    out: dict[str, Any] = {}
    frame = frame.assign(key=_keys(frame))
    for (kind, key), group in frame.groupby(["kind", "key"], sort=False):
        rows = group.iloc[_pick(len(group), MAX_HIST_STEPS)]
        rows = rows[[e is not None and bool(np.isfinite(e).all()) for e in rows["edges"]]]
        out.setdefault(kind, {})[key] = {
            "steps": rows["step"].tolist(),
            "edges": [json_numbers(e) for e in rows["edges"]],
            "counts": [np.asarray(c).tolist() for c in rows["counts"]],
        }
    return out


def _metrics(frame: pd.DataFrame) -> dict[str, Any]:
    """Return ``metrics["<split>/<metric>"] = [steps, values]`` (values float64, exact)."""
    out: dict[str, Any] = {}
    for (split, metric), group in frame.groupby(["split", "metric"], sort=False):
        values = group["value"].to_numpy()
        out[f"{split}/{metric}"] = [group["step"].tolist(), json_numbers(values, np.float64)]
    return out


def _labels(runs: Sequence[Run]) -> list[str]:
    """Return short distinct run labels: ``[experiment ·] arm · s<seed>``, then the id if repeated."""
    several = len({r.meta.get("experiment") for r in runs}) > 1
    labels = []
    for run in runs:
        parts = [str(run.meta.get("experiment"))] if several else []
        parts += [str(run.meta.get("arm", run.run_id)), f"s{run.meta.get('seed', '?')}"]
        labels.append(" · ".join(parts))
    return [f"{label} ({run.run_id})" if labels.count(label) > 1 else label
            for label, run in zip(labels, runs)]


def page_data(runs: Sequence[Run], max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Return everything the page shows, as plain JSON-ready data.

    Args:
        runs: stored runs, in the order they are listed on the page.
        max_points: longest series kept; longer ones are evenly subsampled (first and last kept).

    Returns:
        ``{"title", "notes", "runs": [{id, label, experiment, arm, seed, status, config, env,
        summary, stats, layers, metrics, hists, diagnosis, flow, alerts}]}``;
        ``stats[kind][stat][layer]`` is ``[steps, values]`` with None for non-finite values;
        ``diagnosis``, ``flow`` and ``alerts`` are :mod:`gradprobe.report.diagnosis`'s.
    """
    out_runs: list[dict[str, Any]] = []
    cut: list[str] = []
    for run, label in zip(runs, _labels(runs)):
        stats, layers, was_cut = _series(run.frame(), max_points)
        if was_cut:
            cut.append(label)
        out_runs.append({
            "id": run.run_id, "label": label, "status": run.status,
            "experiment": _text(run.meta.get("experiment")), "arm": _text(run.meta.get("arm")),
            "seed": _text(run.meta.get("seed")),
            "config": _flat(run.config), "env": _flat(run.env),
            "summary": _flat(run.summary) + ([["error", run.error]] if run.error else []),
            "stats": stats, "layers": layers,
            "metrics": _metrics(run.metrics()), "hists": _hists(run.hists()),
            "diagnosis": diagnosis_data(run), "flow": flow_data(run), "alerts": alert_data(run),
        })
    notes = ["Gaps in a curve are non-finite values (NaN or Inf)."]
    if cut:
        notes.insert(0, f"Series longer than {max_points} recorded steps are drawn at {max_points} "
                        f"evenly spaced steps (the store keeps them all): {', '.join(cut)}.")
    experiments = list(dict.fromkeys(r["experiment"] for r in out_runs))
    return {"title": "gradprobe report: " + ", ".join(experiments), "notes": notes,
            "runs": out_runs}


def _script_json(data: Any) -> str:
    """Return JSON that is safe inside ``<script>``: ``<``, ``>``, ``&`` as ``\\u`` escapes."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _figures_html(figures: Sequence[Path]) -> str:
    """Return the Figures tab's body: each PNG inline (the page stays one file) under its stem."""
    if not figures:
        return '<p class="empty">No figures: this page was written without them.</p>'
    return "\n".join(
        f'<figure><figcaption>{html.escape(path.stem)}</figcaption><img alt="{html.escape(path.stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"></figure>'
        for path in figures)


def render_html(runs: Sequence[Run], max_points: int = MAX_POINTS, figures: Sequence[Path] = ()) -> str:
    """Return the complete report page for ``runs`` (plotly.js inlined, ~5 MB), PNG ``figures`` embedded."""
    import plotly.offline

    data = page_data(runs, max_points)
    values = {"TITLE": html.escape(data["title"]), "DATA": _script_json(data),
              "PLOTLYJS": plotly.offline.get_plotlyjs(), "FIGURES": _figures_html(figures)}
    template = _TEMPLATE.read_text(encoding="utf-8")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)  # one pass: no re-expansion


def write_html(
    runs: Sequence[Run], path: str | os.PathLike[str], max_points: int = MAX_POINTS,
    figures: Sequence[Path] = (),
) -> Path:
    """Write the report page (PNG ``figures`` embedded) atomically to ``path`` and return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, render_html(runs, max_points, figures).encode("utf-8"))
    _log.info("wrote %s", target)
    return target


def write_report(runs: Sequence[Run], out_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """Write the PNG/SVG figures of ``runs`` into ``out_dir``, then ``report.html`` showing the PNGs.

    The figures come from :func:`gradprobe.report.figures.save_figures`; if that module is not
    installed, they are skipped with a warning and only the page is written.

    Returns:
        The page's path and the figure files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    try:
        from gradprobe.report.figures import save_figures
    except ModuleNotFoundError as exc:
        if exc.name != "gradprobe.report.figures":
            raise
        _log.warning("figures skipped: gradprobe.report.figures is not available")
    else:
        figures = list(save_figures(runs, out))
    pngs = [path for path in figures if path.suffix == ".png"]
    return write_html(runs, out / REPORT_HTML, figures=pngs), figures

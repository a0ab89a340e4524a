"""The data of the report's Diagnosis tab: the engine's verdicts, the gradient-flow profile and alerts per run.

Nothing here judges a run: the verdicts, key numbers and ranked remedies are the diagnosis
engine's (:func:`gradprobe.diagnose.engine.diagnose`), the profile is
:func:`gradprobe.plots.gradient_flow.flow_profile`'s and the alerts are the store's.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.verdicts import DEAD, SATURATED, Diagnosis, LayerVerdict, key_number
from gradprobe.errors import GradprobeError
from gradprobe.plots.gradient_flow import MOMENTS, flow_profile
from gradprobe.report.numbers import json_number, json_numbers
from gradprobe.store.reader import Run

__all__ = ["alert_data", "diagnosis_data", "flow_data"]

_WIDE = 100_000  # a compact() width at which no line wraps, so each remedy is one line
_ITEM = re.compile(r"^\s+(\d+)\. (.*)$")


def _layer(e: LayerVerdict) -> dict[str, Any]:
    """One row of the per-layer table: verdict, key number and window as ``compact()`` shows them."""
    number = key_number(e)
    cause = e.numbers.get("explained_by") if e.verdict in (DEAD, SATURATED) else None
    steps = e.numbers.get("nonfinite_steps", e.numbers.get("steps"))
    return {"layer": e.layer, "verdict": e.verdict,
            "number": number + (f" via {cause}" if cause else ""),
            "window": "-" if steps is None else f"{steps} steps",
            "evidence": e.evidence, "remedies": list(e.remedies)}


def _remedies(d: Diagnosis) -> list[dict[str, Any]]:
    """The ranked remedies per verdict exactly as :meth:`Diagnosis.compact` lists them.

    compact() is a header, a table of one line per layer, the remedy lines, then one line per note
    (at a width where nothing wraps); the remedy lines are a heading per verdict, then ``N. remedy``.
    """
    lines = d.compact(width=_WIDE).splitlines()
    groups: list[dict[str, Any]] = []
    for line in lines[2 + len(d.layers): len(lines) - len(d.notes)]:
        item = _ITEM.match(line)
        if item and groups:
            groups[-1]["items"].append(item.group(2))
        else:
            groups.append({"heading": line.removesuffix(":"), "items": []})
    return groups


def diagnosis_data(run: Run) -> dict[str, Any]:
    """The engine's diagnosis of ``run`` for the page.

    Returns:
        ``{verdict, layers: [{layer, verdict, number, window, evidence, remedies}], remedies:
        [{heading, items}], notes, compact, verbose}``; ``{"error": message}`` if the run cannot
        be diagnosed (e.g. no weight gradients were recorded).
    """
    try:
        d = diagnose(run)
    except GradprobeError as exc:
        return {"error": str(exc)}
    return {"verdict": d.verdict, "layers": [_layer(e) for e in d.layers], "remedies": _remedies(d),
            "notes": list(d.notes), "compact": d.compact(), "verbose": d.verbose()}


def flow_data(run: Run) -> dict[str, Any] | None:
    """The gradient-flow profile of ``run`` at initialisation, middle and end of training.

    Returns:
        ``{layers, moments: [{moment, step, grad, delta, predicted}]}`` with one value per weight
        matrix (input side first; None where not recorded or non-finite); ``predicted`` (the
        mean-field line) is null unless it applies; None if no weight gradient was recorded.
    """
    try:
        profile = flow_profile(run)
    except GradprobeError:
        return None
    moments = []
    for moment in MOMENTS:
        rows = profile[profile["moment"] == moment]
        predicted = rows["predicted"].to_numpy()
        moments.append({"moment": moment, "step": int(rows["step"].iloc[0]),
                        "grad": json_numbers(rows["grad"]), "delta": json_numbers(rows["delta"]),
                        "predicted": json_numbers(predicted, np.float64) if np.isfinite(predicted).any() else None})
    layers = profile.loc[profile["moment"] == MOMENTS[0], "layer"].tolist()
    return {"layers": layers, "moments": moments}


def alert_data(run: Run) -> list[dict[str, Any]]:
    """The run's alerts in step order: ``[{step, layer, verdict, previous, message, value}]``."""
    frame = run.alerts().sort_values("step", kind="stable")
    return [{"step": int(row.step), "layer": str(row.layer), "verdict": str(row.verdict),
             "previous": None if pd.isna(row.previous) else str(row.previous),
             "message": str(row.message), "value": json_number(row.value)}
            for row in frame.itertuples(index=False)]

"""Shared look of every figure: one colour per arm, layer colours by depth, layer order by depth."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "arm_colors",
    "depth_key",
    "dot_marker",
    "layer_colors",
    "new_figure",
    "order_layers",
    "positive",
]

# Okabe-Ito, colour-blind safe; arm i gets PALETTE[i % len] so every figure agrees.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # green
    "#CC79A7",  # purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: weak on white)
)
_NUMBER = re.compile(r"(\d+)")


def arm_colors(arms: Iterable[str]) -> dict[str, str]:
    """Map each distinct arm, in order of first appearance, to a fixed palette colour.

    Args:
        arms: arm names; repeats are ignored.

    Returns:
        ``{arm: "#rrggbb"}``; the i-th distinct arm gets ``PALETTE[i % len(PALETTE)]``.
    """
    distinct = list(dict.fromkeys(arms))
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(distinct)}


def depth_key(layer: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a module path with numeric parts compared as integers (layers.2 < layers.10)."""
    parts = _NUMBER.split(layer)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def order_layers(layers: Iterable[str], weight_layers: Sequence[str] | None = None) -> list[str]:
    """Return the distinct layers in depth order.

    Args:
        layers: module paths such as ``layers.4``.
        weight_layers: the model's weight matrices in depth order (``summary["weight_layers"]``,
            e.g. ``layers.0.weight``); when every layer is one of their modules, this order wins.

    Returns:
        The layers ordered input side first.
    """
    distinct = list(dict.fromkeys(layers))
    if weight_layers:
        modules = [w.rpartition(".")[0] if w.endswith((".weight", ".bias")) else w
                   for w in weight_layers]
        if all(layer in modules for layer in distinct):
            return sorted(distinct, key=modules.index)
    return sorted(distinct, key=depth_key)


def layer_colors(layers: Sequence[str]) -> dict[str, str]:
    """Map layers (already in depth order) to a sequential colour: dark = input, light = output."""
    cmap = colormaps["viridis"]
    points = np.linspace(0.0, 0.85, max(len(layers), 2))  # stop before the faint yellow end
    return {layer: to_hex(cmap(points[i])) for i, layer in enumerate(layers)}


def dot_marker(n_points: int, at_most: int = 25) -> str:
    """``"o"`` when a line has few points (so a single point still shows), else no marker."""
    return "o" if n_points <= at_most else ""


def positive(values: np.ndarray) -> np.ndarray:
    """Return float values with non-positive and non-finite entries as NaN, for log axes."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def new_figure(nrows: int, ncols: int, panel: tuple[float, float] = (4.6, 3.4),
               sharex: bool | str = False, sharey: bool | str = False) -> tuple[Figure, np.ndarray]:
    """Create a Figure (object API, no pyplot state) and a 2-D array of its axes.

    Args:
        nrows: panel rows.
        ncols: panel columns.
        panel: width and height of one panel in inches.
        sharex: share x axes (``True``, ``"col"``, ``"row"``), as ``Figure.subplots``.
        sharey: share y axes, likewise.

    Returns:
        The figure and its axes, shape (nrows, ncols).
    """
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    share: dict[str, Any] = {"sharex": sharex, "sharey": sharey}
    axes = fig.subplots(nrows, ncols, squeeze=False, **share)
    return fig, axes

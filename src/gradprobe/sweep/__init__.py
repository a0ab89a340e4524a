"""Sweeps: grids of config fields x seeds, run resumably on local, process or Ray executors.

The names are imported on first use (PEP 562): the ensemble engine imports :mod:`gradprobe.sweep.groups`,
and a training run must not pay for scipy.stats, which the aggregation imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradprobe.lazy import export_lazily

if TYPE_CHECKING:
    from gradprobe.sweep.aggregate import aggregate, aggregate_sweep, collect, collect_by_id, interval
    from gradprobe.sweep.grid import Axis, Sweep, SweepItem, expand, load_sweep, parse_axis
    from gradprobe.sweep.runner import SweepOptions, SweepOutcome, run_sweep

_PUBLIC = {
    **dict.fromkeys(("aggregate", "aggregate_sweep", "collect", "collect_by_id", "interval"),
                    "gradprobe.sweep.aggregate"),
    **dict.fromkeys(("Axis", "Sweep", "SweepItem", "expand", "load_sweep", "parse_axis"), "gradprobe.sweep.grid"),
    **dict.fromkeys(("SweepOptions", "SweepOutcome", "run_sweep"), "gradprobe.sweep.runner"),
}

export_lazily(__name__, _PUBLIC)

__all__ = [
    "Axis",
    "Sweep",
    "SweepItem",
    "SweepOptions",
    "SweepOutcome",
    "aggregate",
    "aggregate_sweep",
    "collect",
    "collect_by_id",
    "expand",
    "interval",
    "load_sweep",
    "parse_axis",
    "run_sweep",
]

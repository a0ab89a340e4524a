"""Sweeps: grids of config fields x seeds, run resumably on local, process or Ray executors."""

from gradprobe.sweep.aggregate import aggregate, aggregate_sweep, collect, collect_by_id, interval
from gradprobe.sweep.grid import Axis, Sweep, SweepItem, expand, load_sweep, parse_axis
from gradprobe.sweep.runner import SweepOptions, SweepOutcome, run_sweep

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

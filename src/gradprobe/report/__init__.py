"""Reports of stored runs: figure files, the self-contained HTML page, TensorBoard logs."""

from gradprobe.report.boundary import boundary_grid
from gradprobe.report.figures import CAPTIONS, save_decay_figures, save_figures
from gradprobe.report.html import render_html, write_html, write_report
from gradprobe.report.select import report_dir, resolve_runs
from gradprobe.report.tensorboard import TensorBoardSink, export_runs

__all__ = [
    "CAPTIONS",
    "TensorBoardSink",
    "boundary_grid",
    "export_runs",
    "render_html",
    "report_dir",
    "resolve_runs",
    "save_decay_figures",
    "save_figures",
    "write_html",
    "write_report",
]

"""Reports of stored runs: figure files (and, separately, the HTML report)."""

from gradprobe.report.boundary import boundary_grid
from gradprobe.report.figures import CAPTIONS, save_decay_figures, save_figures

__all__ = ["CAPTIONS", "boundary_grid", "save_decay_figures", "save_figures"]

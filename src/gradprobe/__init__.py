"""gradprobe: see, measure and diagnose vanishing and exploding gradients in any PyTorch model.

The public names are imported on first use (PEP 562), so ``import gradprobe`` and the command
line start without loading torch, pandas or scipy until something needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from gradprobe.lazy import export_lazily

if TYPE_CHECKING:
    from gradprobe.alerts import Alert, GradprobeAlert, StopTraining
    from gradprobe.diagnose.engine import diagnose
    from gradprobe.nan_guard import nan_guard
    from gradprobe.probe import Probe, ProbeOptions
    from gradprobe.store.reader import load_run
    from gradprobe.watcher import watch

try:
    __version__ = version("gradprobe")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

_PUBLIC = {
    "Alert": "gradprobe.alerts",
    "GradprobeAlert": "gradprobe.alerts",
    "StopTraining": "gradprobe.alerts",
    "Probe": "gradprobe.probe",
    "ProbeOptions": "gradprobe.probe",
    "diagnose": "gradprobe.diagnose.engine",
    "load_run": "gradprobe.store.reader",
    "nan_guard": "gradprobe.nan_guard",
    "watch": "gradprobe.watcher",
}


export_lazily(__name__, _PUBLIC)


__all__ = ["Alert", "GradprobeAlert", "Probe", "ProbeOptions", "StopTraining", "__version__", "diagnose", "load_run",
           "nan_guard", "watch"]

"""gradprobe: see, measure and diagnose vanishing and exploding gradients in any PyTorch model.

The public names are imported on first use (PEP 562), so ``import gradprobe`` and the command
line start without loading torch, pandas or scipy until something needs them.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gradprobe' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """Keeps ``gradprobe.diagnose`` the function when the ``gradprobe.diagnose`` subpackage is imported.

    Importing a subpackage sets it as an attribute of its parent; an eager ``from ... import diagnose``
    used to overwrite that again, and the lazy import must not let the subpackage win.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = ["Alert", "GradprobeAlert", "Probe", "ProbeOptions", "StopTraining", "__version__", "diagnose", "load_run",
           "nan_guard", "watch"]

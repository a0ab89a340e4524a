"""gradprobe: see, measure and diagnose vanishing and exploding gradients in any PyTorch model."""

from importlib.metadata import PackageNotFoundError, version

from gradprobe.diagnose.engine import diagnose
from gradprobe.probe import Probe, ProbeOptions
from gradprobe.store.reader import load_run
from gradprobe.watcher import watch

try:
    __version__ = version("gradprobe")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["Probe", "ProbeOptions", "__version__", "diagnose", "load_run", "watch"]

"""The environment a run was made in, stored beside its results."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import numpy as np
import torch


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Versions, platform, device and thread count, for reproducing a run."""
    return {
        "gradprobe": _version("gradprobe"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }


__all__ = ["environment"]

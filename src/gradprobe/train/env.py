"""What a run stores about itself beside its results: environment and meta, in one place."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradprobe.store.writer import RunWriter
from gradprobe.train.config import RunConfig


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


def open_run(store: Path, run_id: str, cfg: RunConfig, batch: str | None) -> RunWriter:
    """Create run ``run_id`` in ``store`` with its config, environment and meta, ready to record.

    The meta names the experiment, arm, seed and invocation ``batch``; the writer adds the creation
    time and the writing process.

    Raises:
        GradprobeError: if the run id is invalid or the run already exists.
    """
    return RunWriter(store, run_id, config=cfg.model_dump(mode="json"), env=environment(cfg.device),
                     meta={"experiment": cfg.experiment, "arm": cfg.arm, "seed": cfg.seed, "batch": batch})


__all__ = ["environment", "open_run"]

"""Where a store lives on disk, what run ids look like and how files in a run are named."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from gradprobe.errors import GradprobeError
from gradprobe.records import HIST_COLUMNS, METRIC_COLUMNS, STAT_COLUMNS

ENV_VAR: Final = "GRADPROBE_STORE"
DEFAULT_STORE: Final = "gradprobe-runs"
RUNS_DIR: Final = "runs"
RUN_JSON: Final = "run.json"
CHECKPOINT: Final = "checkpoint.pt"
MODEL: Final = "model.pt"
BOUNDARY: Final = "boundary.npz"  # decision-boundary grid of a run on 2-D data
TMP_PREFIX: Final = ".tmp-"
PART_KINDS: Final = ("stats", "metrics", "hists", "alerts", "units")

# Every part carries its ``run_id`` column so SQL can join; the Arrow schemas are in store/schemas.py
# (pyarrow is imported only where parts are read or written, not to list runs).
RUN_ID: Final = "run_id"
# Live alerts (gradprobe.alerts): when a layer's verdict appeared or changed; value is the key number.
ALERT_COLUMNS: Final = ("step", "layer", "verdict", "previous", "message", "value")
# Per-unit death and saturation (gradprobe.units), one row per unit, a whole snapshot per part: the last part wins.
UNIT_COLUMNS: Final = ("layer", "unit", "last_fired", "dead_since", "first_dead", "saturated_frac",
                       "observed_steps", "last_observed")
COLUMNS: Final = {"stats": STAT_COLUMNS, "metrics": METRIC_COLUMNS, "hists": HIST_COLUMNS, "alerts": ALERT_COLUMNS,
                  "units": UNIT_COLUMNS}
# Parquet encodings: dictionary for repetitive columns, byte-stream-split for float values.
DICTIONARY: Final = {
    "stats": ("step", "layer", "tensor", "kind", "stat", RUN_ID),
    "metrics": ("step", "epoch", "split", "metric", RUN_ID),
    "hists": ("step", "layer", "tensor", "kind", RUN_ID),
    "alerts": ("layer", "verdict", "previous", RUN_ID),
    "units": ("layer", RUN_ID),
}
BYTE_STREAM_SPLIT: Final = {"stats": ("value",), "metrics": ("value",), "hists": (), "alerts": (), "units": ()}

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_PART = re.compile(r"(stats|metrics|hists|alerts|units)-(\d{6,})\.parquet")
# Longest experiment/arm/seed parts kept in a generated id: 48 + 32 + 13 + stamp + suffix <= 128.
_LIMITS: Final = (48, 32, 12)

__all__ = [
    "ALERT_COLUMNS",
    "BOUNDARY",
    "BYTE_STREAM_SPLIT",
    "CHECKPOINT",
    "COLUMNS",
    "DEFAULT_STORE",
    "DICTIONARY",
    "ENV_VAR",
    "MODEL",
    "PART_KINDS",
    "RUNS_DIR",
    "RUN_ID",
    "RUN_JSON",
    "TMP_PREFIX",
    "UNIT_COLUMNS",
    "checkpoint_path",
    "is_valid_run_id",
    "new_run_id",
    "parse_part_name",
    "part_name",
    "resolve_store",
    "run_dir",
    "run_ids",
    "sanitize_run_id",
    "validate_run_id",
]


def resolve_store(store: str | os.PathLike[str] | None = None) -> Path:
    """Return the store root: the argument, else ``$GRADPROBE_STORE``, else ``./gradprobe-runs``.

    Args:
        store: explicit store root, or None to fall back to the environment and the default.

    Returns:
        The store root as an absolute path (it need not exist yet).
    """
    if store is None or str(store) == "":
        store = os.environ.get(ENV_VAR) or DEFAULT_STORE
    return Path(store).expanduser().absolute()


def is_valid_run_id(run_id: object) -> bool:
    """Return whether ``run_id`` matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` without ``..``."""
    return isinstance(run_id, str) and bool(_RUN_ID.fullmatch(run_id)) and ".." not in run_id


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` unchanged if it is a valid run id.

    Raises:
        GradprobeError: if it could escape the store or is not a plain name.
    """
    if not is_valid_run_id(run_id):
        raise GradprobeError(
            f"run: {run_id!r} is not a valid run id; use letters, digits, '.', '_' and '-'"
        )
    return run_id  # type: ignore[return-value]  # checked just above


def sanitize_run_id(text: str) -> str:
    """Turn any text into a valid run id (bad characters become ``-``; empty becomes ``run``)."""
    out = _BAD_CHARS.sub("-", str(text))
    out = re.sub(r"\.{2,}", ".", out)
    out = out.lstrip("._-")[:128].rstrip(".")
    return out or "run"


def new_run_id(
    experiment: str,
    arm: str | None,
    seed: int | str | None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Build a unique run id such as ``circles-deep.sigmoid.s0.20261123-190102.a3f9``.

    Args:
        experiment: experiment name, sanitised.
        arm: arm of the sweep (e.g. activation name) or None, sanitised.
        seed: seed, written as ``s<seed>``; None leaves it out.
        clock: seconds since the epoch; the stamp is in UTC.

    Returns:
        A valid run id ending in a random 4-hex suffix so that parallel runs never collide.
    """
    parts = [sanitize_run_id(experiment)[: _LIMITS[0]].rstrip(".")]
    if arm:
        parts.append(sanitize_run_id(arm)[: _LIMITS[1]].rstrip("."))
    if seed is not None and str(seed) != "":
        parts.append("s" + sanitize_run_id(str(seed))[: _LIMITS[2]].rstrip("."))
    parts.append(time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock())))
    parts.append(secrets.token_hex(2))
    return validate_run_id(".".join(parts))


def run_dir(run_id: str, store: str | os.PathLike[str] | None = None) -> Path:
    """Return ``<store>/runs/<run_id>`` after validating the run id."""
    return resolve_store(store) / RUNS_DIR / validate_run_id(run_id)


def checkpoint_path(run_id: str, store: str | os.PathLike[str] | None = None) -> Path:
    """Return where a run's checkpoint lives; write it through ``atomic_path``."""
    return run_dir(run_id, store) / CHECKPOINT


def run_ids(store: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the sorted names of run directories in the store (dot names and junk are ignored)."""
    runs = resolve_store(store) / RUNS_DIR
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir() if is_valid_run_id(p.name) and p.is_dir())


def part_name(kind: str, index: int) -> str:
    """Return the name of part ``index`` (1-based) of ``kind``, e.g. ``stats-000001.parquet``."""
    if kind not in PART_KINDS:
        raise ValueError(f"kind: {kind!r} is not a part kind; use one of {', '.join(PART_KINDS)}")
    return f"{kind}-{index:06d}.parquet"


def parse_part_name(name: str) -> tuple[str, int] | None:
    """Return ``(kind, index)`` of a part file name, or None for anything else (``.tmp-*``)."""
    match = _PART.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else None

"""Numbers as the report page holds them: shortest decimals that read back exactly, NaN/Inf as null."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["json_number", "json_numbers"]


def json_numbers(values: Any, dtype: type = np.float32) -> list[float | None]:
    """Return values as shortest round-trip decimals of ``dtype``; NaN/Inf become None (a gap).

    A value beyond ``dtype``'s range is Inf in it, so it too becomes a gap rather than invalid JSON.
    """
    text = np.asarray(values, dtype=np.float64).astype(dtype).astype(str)  # shortest repr that reads back exactly
    return [number if math.isfinite(number) else None for number in map(float, text)]


def json_number(value: Any) -> float | None:
    """One number for the page (float64, exact); None for NaN/Inf or a missing value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

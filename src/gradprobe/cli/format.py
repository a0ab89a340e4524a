"""Numbers and tables as a person reads them in a terminal."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table


def num(value: Any, digits: int = 4) -> str:
    """Compact number: '-' for missing, 'inf'/'nan' spelled out."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pct(value: Any) -> str:
    """Accuracy as a percentage."""
    return "-" if value is None else f"{100 * float(value):.1f}%"


def json_number(value: Any) -> Any:
    """JSON has no NaN/Infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    """A rich table with right-aligned numeric columns after the first."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    return t


__all__ = ["json_number", "num", "pct", "table"]

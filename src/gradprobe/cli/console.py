"""Shared console objects: results on stdout, progress and errors on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

out = Console(highlight=False)
if not out.is_terminal:  # pipes and CI logs: wide enough for the comparison tables
    out = Console(highlight=False, width=160)
err = Console(stderr=True, highlight=False)


@contextmanager
def progress_bars() -> Iterator[Progress]:
    """Rich progress bars on stderr with ETA, left on screen only when stderr is a terminal."""
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=not err.is_terminal)
    with bars:
        yield bars


__all__ = ["err", "out", "progress_bars"]

"""A quantity reduces a tensor to a few raw numbers on its device; the host turns them into statistics.

Splitting the work this way keeps the per-step cost to a handful of reductions per tensor: the
divisions, square roots and fractions that turn raw sums into ``mean``, ``std`` or ``dead_frac``
run later, vectorised with NumPy over many rows at once, when buffered records are flushed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from gradprobe.errors import GradprobeError


@dataclass(frozen=True)
class Inputs:
    """What a quantity may read for one tensor at one step; fields a quantity does not need stay None."""

    value: torch.Tensor  # the tensor described: grad, weight, module output or delta
    previous: torch.Tensor | None = None  # the weight before this optimizer step
    family: object | None = None  # activation family of the module (see activation_stats)
    source: torch.Tensor | None = None  # the module's input, where a derivative test needs it


class Quantity(ABC):
    """Statistics of one kind computed together because they share intermediates.

    Subclasses declare ``kind`` (a records kind), the stats they can produce and what they need.
    """

    kind: str
    available: tuple[str, ...]

    def __init__(self, stats: tuple[str, ...]) -> None:
        unknown = [s for s in stats if s not in self.available]
        if unknown:
            raise GradprobeError(
                f"{self.kind} stats: {unknown[0]!r} is not available for kind {self.kind!r}; "
                f"allowed: {', '.join(self.available)}"
            )
        self.stats = tuple(stats)

    def stats_for(self, inputs: Inputs) -> tuple[str, ...]:
        """The stats this quantity produces for these inputs (some apply only to some modules)."""
        return self.stats

    @abstractmethod
    def raw(self, inputs: Inputs) -> torch.Tensor:
        """Raw reductions of one tensor, a 1-d tensor on its device (no host sync on accelerators)."""

    @abstractmethod
    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        """Host-side numbers the finalisation needs (element counts, shapes); known without a sync."""

    @abstractmethod
    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        """Turn raw rows ``(n, k)`` and their meta ``(n, m)`` into statistics ``(n, len(stats))``."""


__all__ = ["Inputs", "Quantity"]

"""A quantity turns one tensor (plus what it declares it needs) into a vector of statistics on its device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from gradprobe.errors import GradprobeError


@dataclass(frozen=True)
class Inputs:
    """What a quantity may read for one tensor at one step; fields a quantity does not need stay None."""

    value: torch.Tensor  # the tensor described: grad, weight, module output or delta
    previous: torch.Tensor | None = None  # the weight before this optimizer step
    family: object | None = None  # activation family of the module (see activation_stats)


class Quantity(ABC):
    """Statistics of one kind computed together because they share intermediates.

    Subclasses declare ``kind`` (a records kind), the stats they can produce and
    ``needs`` (``"previous"`` for a snapshot of weights before the step).
    """

    kind: str
    available: tuple[str, ...]
    needs: frozenset[str] = frozenset()

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
    def compute(self, inputs: Inputs) -> torch.Tensor:
        """Return a float32 vector of ``len(self.stats_for(inputs))`` values, on the tensor's device."""


__all__ = ["Inputs", "Quantity"]

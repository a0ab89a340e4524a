"""Verdicts: what is wrong, where, the numbers that show it and what to do, per layer and overall."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Final, Literal

HEALTHY: Final = "healthy"
VANISHING: Final = "vanishing"
EXPLODING: Final = "exploding"
DEAD: Final = "dead"
SATURATED: Final = "saturated"
STALLED: Final = "stalled"
UNSTABLE: Final = "unstable"
FROZEN: Final = "frozen"  # requires_grad is False: not trained, so nothing to judge

# Most severe first. Non-finite values end training; exploding gradients come next because they
# soon become non-finite; vanishing gradients stop learning in whole layers; dead and saturated
# units take part of a layer's width; a stalled layer is one layer that does not move. A frozen
# layer is listed last: freezing is a choice, so it never makes the overall verdict worse than healthy.
PRECEDENCE: Final = (UNSTABLE, EXPLODING, VANISHING, DEAD, SATURATED, STALLED, HEALTHY, FROZEN)

Verdict = Literal["unstable", "exploding", "vanishing", "dead", "saturated", "stalled", "healthy", "frozen"]


def severity(verdict: str) -> int:
    """Rank of ``verdict`` in :data:`PRECEDENCE`: 0 is the most severe."""
    return PRECEDENCE.index(verdict)


@dataclass
class LayerVerdict:
    """The verdict on one layer (a weight matrix's name, e.g. ``layers.0.weight``).

    Attributes:
        layer: parameter name of the weight matrix (or ``(loss)`` for a loss that went non-finite).
        verdict: one of :data:`PRECEDENCE`.
        evidence: the numbers behind the verdict, in words.
        remedies: what to try, most promising first.
        numbers: the same numbers as floats (keys name what they measure).
    """

    layer: str
    verdict: str
    evidence: str
    remedies: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"layer", "verdict", "evidence", "remedies"}`` as plain JSON types."""
        return {"layer": self.layer, "verdict": self.verdict, "evidence": self.evidence,
                "remedies": list(self.remedies)}


@dataclass
class Diagnosis:
    """The overall verdict (the most severe layer verdict) and one verdict per layer, first layer first."""

    verdict: str
    layers: list[LayerVerdict]
    notes: list[str] = field(default_factory=list)  # how it was measured, e.g. the windows

    def to_dict(self) -> dict[str, Any]:
        """``{"verdict": str, "layers": [{"layer", "verdict", "evidence", "remedies"}]}``."""
        return {"verdict": self.verdict, "layers": [layer.to_dict() for layer in self.layers]}

    def layer(self, name: str) -> LayerVerdict:
        """The verdict on layer ``name``.

        Raises:
            KeyError: if the diagnosis has no such layer.
        """
        for entry in self.layers:
            if entry.layer == name:
                return entry
        raise KeyError(f"{name!r} is not a diagnosed layer; layers are {', '.join(e.layer for e in self.layers)}")

    def __str__(self) -> str:
        width = max((len(e.layer) for e in self.layers), default=0)
        lines = [f"gradprobe diagnosis: {self.verdict}"]
        for e in self.layers:
            head = f"  {e.layer:<{width}}  {e.verdict:<9}  "
            body = textwrap.wrap(e.evidence, 100 - len(head)) or [""]
            lines.append(head + body[0])
            lines.extend(" " * len(head) + more for more in body[1:])
            for rank, remedy in enumerate(e.remedies, 1):
                lines.append(f"{' ' * len(head)}{rank}. {remedy}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


__all__ = ["DEAD", "EXPLODING", "FROZEN", "HEALTHY", "PRECEDENCE", "SATURATED", "STALLED", "UNSTABLE", "VANISHING",
           "Diagnosis", "LayerVerdict", "Verdict", "severity"]

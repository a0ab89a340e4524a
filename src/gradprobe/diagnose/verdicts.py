"""Verdicts: what is wrong, where, the numbers that show it and what to do, per layer and overall."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gradprobe.errors import GradprobeError

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
COMPACT_WIDTH: Final = 80  # str(Diagnosis) fits an 80-column terminal

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
        """The compact text: one line per layer and the remedies once per verdict (see :meth:`compact`)."""
        return self.compact()

    def compact(self, width: int = COMPACT_WIDTH) -> str:
        """One line per layer (verdict, key number, window), then the ranked remedies once per verdict.

        Args:
            width: the longest line, in characters (an 80-column terminal by default); at least 72.

        Returns:
            The text, no line longer than ``width``; :meth:`verbose` gives the full evidence.
        """
        if width < 72:
            raise GradprobeError(f"width: {width} is too narrow for the compact diagnosis; allowed: 72 or more")
        return "\n".join([f"gradprobe diagnosis: {self.verdict}", *_layer_lines(self.layers, width),
                           *_remedy_lines(self.layers, width),
                           *(line for note in self.notes for line in _wrap(note, width, "  note: ", "        "))])

    def verbose(self) -> str:
        """The full text: every layer's evidence in words and its ranked remedies, then the notes."""
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


def _tail(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: its tail after ``...``, cut at a dot where that keeps most of it."""
    if len(name) <= width:
        return name
    tail = name[len(name) - (width - 3):]
    dot = tail.find(".")
    if 0 <= dot < len(tail) // 2:  # drop the partial component before the dot
        tail = tail[dot + 1:]
    return "..." + tail


def _flow_key(e: LayerVerdict) -> str | None:
    """The flow ratio a flow rule judged: the error ratio, else the most extreme stream/grad ratio (or the first)."""
    from gradprobe.diagnose.evidence import bare  # lazy: evidence imports numpy and pandas

    n = e.numbers
    if "error_ratio" in n:
        return f"error {bare(n['error_ratio'])}"
    found = [(k, float(n[f"{k}_ratio"])) for k in ("stream", "grad") if f"{k}_ratio" in n]
    if not found:
        return None
    if e.verdict == EXPLODING:
        found = [max(found, key=lambda kv: kv[1])]
    elif e.verdict != HEALTHY:  # vanishing, or a vanishing layer put down to dead/saturated units
        found = [min(found, key=lambda kv: kv[1])]
    return f"{found[0][0]} {bare(found[0][1])}"


def key_number(e: LayerVerdict) -> str:
    """The one number that shows a layer's verdict, in words: ``error 1/34``, ``dead 62%``, ``update 1.2e-06``.

    Read from ``e.numbers``: the fraction of dead or saturated units, the first non-finite step, the flow
    ratio (error, residual stream or gradient against the output layer), else the update ratio.
    """
    from gradprobe.diagnose.evidence import pct, sci  # lazy: evidence imports numpy and pandas

    n = e.numbers
    if e.verdict == FROZEN:
        return "not trained"
    if e.verdict == UNSTABLE:
        return f"NaN/Inf from step {n['first_step']}" if "first_step" in n else "loss NaN/Inf"
    for key, words in (("dead_frac", "dead"), ("saturated_frac", "saturated")):
        if e.verdict in (DEAD, SATURATED) and key in n:
            return f"{words} {pct(n[key])}"
    flow = _flow_key(e) if e.verdict != STALLED else None
    if flow is None and "update_ratio" in n:
        flow = f"update {sci(n['update_ratio'])}"
    return flow or "-"


def _keyed(e: LayerVerdict, width: int) -> str:
    """:func:`key_number` in at most ``width`` characters, with the layer whose units explain it (``via ...``)."""
    base = key_number(e)
    cause = e.numbers.get("explained_by") if e.verdict in (DEAD, SATURATED) else None
    room = width - len(base) - len(" via ")
    if cause is None or room < 6:
        return base
    return f"{base} via {_tail(str(cause), room)}"


def _window(e: LayerVerdict) -> str:
    """How many recorded steps the key number covers (for unstable: how many held NaN/Inf)."""
    steps = e.numbers.get("nonfinite_steps", e.numbers.get("steps"))
    return "-" if steps is None else f"{steps} steps"


def _layer_lines(layers: list[LayerVerdict], width: int) -> list[str]:
    """A header and one line per layer; the layer (and a long key) are cut to their tails to fit ``width``."""
    windows = [_window(e) for e in layers]
    win = max(map(len, windows + ["window"]))
    keys = [_keyed(e, 28) for e in layers]
    key = max(map(len, keys + ["number"]))
    names = [_tail(e.layer, width - 2 - 9 - key - win - 6) for e in layers]
    name = max(map(len, names + ["layer"]))
    rows = [("layer", "verdict", "number", "window")]
    rows += [(n, e.verdict, k, w) for n, e, k, w in zip(names, layers, keys, windows)]
    return [f"  {a:<{name}}  {b:<9}  {c:<{key}}  {d:>{win}}" for a, b, c, d in rows]


def _ranked(groups: list[list[str]]) -> list[str]:
    """Remedies of several layers with one verdict, by mean rank (one not listed ranks last), then first seen."""
    seen = list(dict.fromkeys(r for g in groups for r in g))
    mean = {r: sum(g.index(r) if r in g else len(g) for g in groups) / len(groups) for r in seen}
    return sorted(seen, key=lambda r: (mean[r], seen.index(r)))


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def _remedy_lines(layers: list[LayerVerdict], width: int) -> list[str]:
    """Per verdict, most severe first, its ranked remedies; one already listed refers back to where it was."""
    lines: list[str] = []
    where: dict[str, str] = {}
    for verdict in PRECEDENCE:
        groups = [e.remedies for e in layers if e.verdict == verdict and e.remedies]
        if not groups:
            continue
        count = sum(e.verdict == verdict for e in layers)
        lines.append(f"{verdict} ({count} layer{'s' * (count > 1)}), most promising first:")
        for rank, remedy in enumerate(_ranked(groups), 1):
            text = f"same as {where[remedy]}" if remedy in where else remedy
            where.setdefault(remedy, f"{verdict} {rank}")
            lines.extend(_wrap(text, width, f"  {rank}. ", " " * (len(str(rank)) + 4)))
    return lines


__all__ = ["COMPACT_WIDTH", "DEAD", "EXPLODING", "FROZEN", "HEALTHY", "PRECEDENCE", "SATURATED", "STALLED", "UNSTABLE",
           "VANISHING", "Diagnosis", "LayerVerdict", "Verdict", "key_number", "severity"]

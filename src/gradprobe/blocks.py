"""Buffered raw records of a probe, and their one-transfer move to the host as tidy frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from gradprobe import records as R
from gradprobe.quantities import Quantity
from gradprobe.quantities.histograms import unpack_histogram

if TYPE_CHECKING:
    from gradprobe.distributed import World

log = logging.getLogger(__name__)

# How a block's rows combine across data-parallel ranks (see gradprobe.distributed).
SAME = "same"  # every rank holds the same rows (replicated weights, all-reduced gradients, step records)
EXAMPLES = "examples"  # each rank reduced its share of the batch (module outputs and deltas)
SHARDS = "shards"  # each rank reduced its shard of every tensor (FSDP2 parameters and gradients)
NORMS = "norms"  # each rank's rows are norms of its shards: they add in quadrature (FSDP2 update ratios)


@dataclass
class Block:
    """Raw reductions of several tensors of one kind at one step, still on the device."""

    step: int
    quantity: Quantity
    names: list[tuple[str, str]]  # (layer, tensor) per row
    stats: tuple[str, ...]  # what the rows become once finalised on the host
    raw: torch.Tensor  # (len(names), k) raw reductions
    meta: list[tuple[float, ...]]  # per row: what finalising needs (element counts, shapes)
    spread: str = SAME  # how rows combine across ranks
    batch: list[int] | None = None  # EXAMPLES: examples per row on this rank
    dead: list[torch.Tensor | None] | None = None  # EXAMPLES: per-unit dead mask per row (kept under distributed)
    local: list[float] | None = None  # SHARDS: this rank's element count per row (meta holds the global one)


@dataclass
class HostRows:
    """A block's raw rows and meta on the host, as finalising reads them."""

    raw: np.ndarray  # (n, k) float64
    meta: np.ndarray  # (n, m) float64


@dataclass
class Buffer:
    """Blocks and histograms recorded since the last flush, and the steps they cover."""

    blocks: list[Block] = field(default_factory=list)
    hists: list[tuple[int, str, str, str, torch.Tensor]] = field(default_factory=list)
    steps: set[int] = field(default_factory=set)


def to_host(tensors: list[torch.Tensor]) -> np.ndarray:
    """All ``tensors`` flattened and joined on the host, with one transfer per device."""
    if not tensors:
        return np.zeros(0, dtype=np.float32)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    flat = [t.reshape(-1) for t in tensors]
    host: list[np.ndarray | None] = [None] * len(tensors)
    for idx in by_device.values():
        joined = torch.cat([flat[i] for i in idx]).detach().cpu().numpy()
        offsets = np.cumsum([0] + [flat[i].numel() for i in idx])
        for j, i in enumerate(idx):
            host[i] = joined[offsets[j] : offsets[j + 1]]
    return np.concatenate(host)  # type: ignore[arg-type]


def host_rows(blocks: list[Block]) -> list[HostRows]:
    """Every block's raw rows and meta on the host (one transfer per device)."""
    raw = to_host([b.raw.double() for b in blocks])
    offsets = np.cumsum([0] + [b.raw.numel() for b in blocks])
    return [HostRows(raw[offsets[i]:offsets[i + 1]].reshape(b.raw.shape[0], -1),
                     np.array(b.meta, dtype=np.float64).reshape(len(b.names), -1)) for i, b in enumerate(blocks)]


def finalize_blocks(blocks: list[Block], rows: list[HostRows] | None = None) -> np.ndarray:
    """Host statistics of every block, in block order, finalised group by group with NumPy.

    ``rows`` are the blocks' host rows if already moved (and combined across ranks); else they are moved here.
    """
    rows = host_rows(blocks) if rows is None else rows
    groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for i, b in enumerate(blocks):
        groups.setdefault((id(b.quantity), b.stats), []).append(i)
    parts: list[np.ndarray] = [np.empty(0)] * len(blocks)
    for members in groups.values():
        first = blocks[members[0]]
        raw = np.concatenate([rows[i].raw for i in members])
        meta = np.concatenate([rows[i].meta for i in members])
        values = first.quantity.finalize(raw, meta, first.stats)  # (rows, len(stats))
        start = 0
        for i in members:
            n = len(blocks[i].names)
            parts[i] = values[start:start + n].reshape(-1)
            start += n
    return np.concatenate(parts) if parts else np.zeros(0)


def stats_frame(blocks: list[Block], rows: list[HostRows] | None = None) -> pd.DataFrame:
    """The tidy stats frame (:data:`records.STAT_COLUMNS`) of buffered blocks (their host ``rows`` if moved)."""
    values = finalize_blocks(blocks, rows)
    cols: dict[str, list[Any]] = {"step": [], "layer": [], "tensor": [], "kind": [], "stat": []}
    for b in blocks:
        n = len(b.names) * len(b.stats)
        cols["step"].extend([b.step] * n)
        cols["kind"].extend([b.quantity.kind] * n)
        for layer, tensor in b.names:
            cols["layer"].extend([layer] * len(b.stats))
            cols["tensor"].extend([tensor] * len(b.stats))
            cols["stat"].extend(b.stats)
    frame = pd.DataFrame(cols)
    frame["value"] = values.astype(np.float64)
    return frame[list(R.STAT_COLUMNS)]


def hist_frame(hists: list[tuple[int, str, str, str, torch.Tensor]], bins: int) -> pd.DataFrame:
    """The histogram frame (:data:`records.HIST_COLUMNS`) of buffered packed histograms."""
    packed = to_host([h[4] for h in hists]).reshape(len(hists), bins + 3)
    rows = []
    for (step, layer, tensor, kind, _), vec in zip(hists, packed):
        edges, counts, _nonfinite = unpack_histogram(vec, bins)
        rows.append((step, layer, tensor, kind, edges, counts))
    return pd.DataFrame(rows, columns=list(R.HIST_COLUMNS))



Sink = Callable[[pd.DataFrame, pd.DataFrame], None]


class Records:
    """What a probe buffered on the device and what it already moved to the host; flushes hand frames to ``sink``.

    Under torch.distributed (``world``) flushes combine the blocks of every rank and are collective,
    and only rank 0 hands frames to ``sink``.
    """

    def __init__(self, bins: int, sink: Sink | None, world: World | None = None) -> None:
        self.bins, self.buffer, self.world = bins, Buffer(), world
        self.sink = sink if world is None or world.rank == 0 else None
        self._frames: list[pd.DataFrame] = []
        self._hist_frames: list[pd.DataFrame] = []

    def push(self, blocks: list[Block]) -> None:
        """Buffer ``blocks`` (those with rows and stats)."""
        for block in blocks:
            if block.names and block.stats:
                if self.world is None:
                    block.dead = None  # the masks are only combined across ranks
                self.buffer.blocks.append(block)
                self.buffer.steps.add(block.step)

    @property
    def empty(self) -> bool:
        """Whether nothing is buffered."""
        return not self.buffer.blocks and not self.buffer.hists

    def full(self, steps_done: int, flush_every: int) -> bool:
        """Whether to flush now: ``flush_every`` recorded steps are buffered; under distributed, every
        ``flush_every`` optimizer steps, so that all ranks flush together even if their cadences disagree."""
        if self.world is not None:
            return steps_done % flush_every == 0
        return len(self.buffer.steps) >= flush_every

    def flush(self) -> pd.DataFrame | None:
        """Move the buffer to the host as frames and hand them to the sink; the stats frame, None if empty.

        Raises:
            GradprobeError: under distributed, if the ranks buffered different steps or rows.
        """
        blocks, hists = self.buffer.blocks, self.buffer.hists
        self.buffer = Buffer()
        rows = None
        if self.world is not None:
            rows = self.world.combine(blocks, host_rows(blocks))
        if not blocks and not hists:
            return None
        stats, hist = stats_frame(blocks, rows), hist_frame(hists, self.bins)
        self._frames.append(stats)
        self._hist_frames.append(hist)
        if self.sink is not None:
            self.sink(stats, hist)
        return stats

    def frame(self) -> pd.DataFrame:
        """Every stats frame moved so far, joined (an empty frame with typed columns if none)."""
        if not self._frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(R.STAT_COLUMNS, (
                "int64", "object", "object", "object", "object", "float64"))})
        return pd.concat(self._frames, ignore_index=True)

    def hists(self) -> pd.DataFrame:
        """Every histogram frame moved so far, joined."""
        if not self._hist_frames:
            return pd.DataFrame(columns=list(R.HIST_COLUMNS))
        return pd.concat(self._hist_frames, ignore_index=True)


def first_nonfinite(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The first record (step, layer, tensor, kind) that counted NaN/Inf entries, or None.

    Only counted entries: a float32 mean of huge finite values may overflow, and a zero-initialised
    bias has an infinite update ratio, yet neither tensor holds a NaN or Inf.
    """
    bad = frame[(frame["stat"] == R.NONFINITE) & (frame["value"] > 0)]
    if not len(bad):
        return None
    first = bad.loc[bad["step"].idxmin()]
    log.warning("non-finite values first seen at step %d in %s.%s (%s)",
                first["step"], first["layer"], first["tensor"], first["kind"])
    return {"step": int(first["step"]), "layer": first["layer"], "tensor": first["tensor"], "kind": first["kind"]}


__all__ = ["EXAMPLES", "NORMS", "SAME", "SHARDS", "Block", "Buffer", "HostRows", "Records", "Sink",
           "finalize_blocks", "first_nonfinite", "hist_frame", "host_rows", "stats_frame", "to_host"]

"""Exact statistics under data-parallel (DDP) and sharded (FSDP2) training, combined once per flush.

Each rank reduces what it holds: its share of the batch (activation and delta rows) and, under FSDP2, its
shard of every parameter and gradient (``DTensor.to_local()``). Before a flush the raw rows of the buffered
blocks are all-gathered and combined as if one process had seen everything: sums and counts add, ``max |x|``
takes the max, plain norms add in squares, centred norms combine with Chan's pairwise formula (as
:func:`~gradprobe.quantities.tensor_stats.merge_moments`, for many rows at once), a unit is dead only if dead
on every rank, and update-ratio norms add in quadrature. Deltas are of the loss the optimizer descends: DDP
and FSDP average gradients over ranks, so that loss is the mean of the ranks' losses and its delta is each
rank's divided by the world size. Gradients under DDP are already all-reduced when the optimizer steps, and
weights are replicas, so their rows are the same on every rank (checked, warned if not).

A flush costs two small collectives: a fixed-size signature (steps, row count, a hash of what was
recorded, payload size), so that ranks which disagree fail with a :class:`GradprobeError` on every
rank instead of a collective of mismatched sizes hanging, then the payload itself.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gradprobe import records as R
from gradprobe.blocks import EXAMPLES, NORMS, SAME, SHARDS, Block, HostRows, to_host
from gradprobe.errors import GradprobeError
from gradprobe.quantities.tensor_stats import LINEAR, MAX_ABS, ROOT_SS, ROOT_SSD, SUM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """The default process group the probe combines over: this rank, the group's size, the collective device."""

    group: Any  # torch.distributed.ProcessGroup
    rank: int
    size: int
    device: torch.device  # where the backend runs collectives (cuda for nccl, cpu for gloo)

    def combine(self, blocks: list[Block], rows: list[HostRows]) -> list[HostRows]:
        """See :func:`combine`."""
        return combine(self, blocks, rows)


def current_world() -> World | None:
    """The initialised default process group of more than one rank, or None (single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    group = dist.group.WORLD
    cuda = dist.get_backend(group) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return World(group, dist.get_rank(), dist.get_world_size(), device)


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` wraps (names without ``module.``); other models as they are.

    Raises:
        GradprobeError: for an FSDP1 ``FullyShardedDataParallel`` model (flattened parameters).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    if type(model).__name__ == "FullyShardedDataParallel":
        raise GradprobeError("model: FSDP1 FullyShardedDataParallel holds flattened 1-d slices of its parameters; "
                             "shard with torch.distributed.fsdp.fully_shard (FSDP2) instead")
    return model


def is_sharded(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor (an FSDP2 parameter or gradient): each rank holds a shard of it."""
    # Not imported here (seconds on a cold start): until something imported it, no tensor is a DTensor.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (without FSDP's padding); a plain tensor as it is."""
    return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]


def check_params(named: Sequence[tuple[str, torch.Tensor]], world: World | None) -> bool:
    """Whether the recorded parameters are sharded (all DTensors over all ranks) rather than replicated.

    Raises:
        GradprobeError: for a mix of sharded and plain parameters, or a mesh that is not 1-d over every rank.
    """
    sharded = [n for n, p in named if is_sharded(p)]
    if not sharded:
        return False
    if len(sharded) < len(named):
        plain = next(n for n, p in named if not is_sharded(p))
        raise GradprobeError(f"params: {sharded[0]!r} is sharded (DTensor) but {plain!r} is not; shard every "
                             "recorded parameter with fully_shard or select the sharded ones with params=")
    for name, p in named:
        mesh = p.device_mesh  # type: ignore[attr-defined]
        if world is None or mesh.ndim != 1 or mesh.size() != world.size:
            raise GradprobeError(f"params: {name!r} is sharded over a mesh of shape {tuple(mesh.shape)}; "
                                 f"only a 1-d mesh over all {world.size if world else 1} ranks is supported")
    return True


def check_cadence(world: World | None, budget: float | None, hist_every: object, sharded: bool) -> None:
    """Refuse what cannot be combined across ranks.

    Raises:
        GradprobeError: for ``budget`` under torch.distributed (each rank would time itself and record
            different steps) and for histograms of sharded parameters (bin edges differ per shard).
    """
    if world is not None and budget is not None:
        raise GradprobeError(f"budget={budget!r}: a timed cadence differs between ranks under torch.distributed; "
                             "pass every= instead")
    if sharded and hist_every is not None:
        raise GradprobeError(f"hist_every={hist_every!r}: histograms of sharded (FSDP) parameters are not "
                             "supported; pass hist_every=None")


def _signature(blocks: list[Block], payload: int) -> np.ndarray:
    """The header a rank sends: n_steps, first and last step, rows, a hash of what every row is, payload bytes."""
    h = hashlib.blake2b(digest_size=7)  # 56 bits: fits an int64 exactly
    for b in blocks:
        h.update(repr((b.step, b.quantity.kind, b.spread, b.stats, b.names, tuple(b.raw.shape[1:]),
                       len(b.meta[0]) if b.meta else 0)).encode())
    steps = sorted({b.step for b in blocks})
    rows = sum(len(b.names) for b in blocks)
    return np.array([len(steps), steps[0] if steps else -1, steps[-1] if steps else -1, rows,
                     int.from_bytes(h.digest(), "little"), payload], dtype=np.int64)


def _describe(header: np.ndarray) -> str:
    n, first, last, rows = (int(v) for v in header[:4])
    return f"{n} steps ({first}..{last}), {rows} rows" if n else "nothing"


def _gather(world: World, data: np.ndarray) -> np.ndarray:
    """``data`` of every rank, stacked ``(size, *data.shape)`` (one all_gather on the backend's device)."""
    mine = torch.from_numpy(np.ascontiguousarray(data)).to(world.device)
    out = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(out, mine, group=world.group)
    return torch.stack(out).cpu().numpy()


def _masks(blocks: list[Block]) -> list[list[np.ndarray | None]]:
    """Per block and row the per-unit dead mask on the host (one transfer), None where there is none."""
    flat = [(i, j, m) for i, b in enumerate(blocks) for j, m in enumerate(b.dead or []) if m is not None]
    host = to_host([m.to(torch.uint8) for _, _, m in flat])
    out: list[list[np.ndarray | None]] = [[None] * len(b.names) for b in blocks]
    start = 0
    for i, j, m in flat:
        out[i][j] = host[start:start + m.numel()].astype(bool)
        start += m.numel()
    return out


def _aux(block: Block) -> list[float]:
    """Per row what combining needs beyond raw and meta: the batch (examples) or local element count (shards)."""
    if block.spread == EXAMPLES:
        return [float(b) for b in (block.batch or [1] * len(block.names))]
    if block.spread == SHARDS:
        return list(block.local or [0.0] * len(block.names))
    return [0.0] * len(block.names)


def _pack(blocks: list[Block], rows: list[HostRows], masks: list[list[np.ndarray | None]]) -> tuple[np.ndarray, int]:
    """This rank's payload bytes and the length of its float part (the same on every rank that agrees)."""
    floats: list[np.ndarray] = []
    bits: list[np.ndarray] = []
    for b, r, ms in zip(blocks, rows, masks):
        lengths = [-1.0 if m is None else float(m.size) for m in ms]
        floats += [r.raw.ravel(), r.meta.ravel(), np.array(_aux(b)), np.array(lengths)]
        bits += [np.packbits(m) for m in ms if m is not None]
    f = np.concatenate(floats).astype(np.float64) if floats else np.zeros(0)
    return np.concatenate([f.view(np.uint8), *bits]), f.size


def _unpack(blocks: list[Block], rows: list[HostRows], data: np.ndarray, n_floats: int
            ) -> tuple[list[HostRows], list[np.ndarray], list[list[np.ndarray | None]]]:
    """One rank's rows, aux and masks from its payload, laid out as this rank's ``blocks``."""
    f = data[:n_floats * 8].view(np.float64)
    bit_at = n_floats * 8
    out_rows, out_aux, out_masks = [], [], []
    at = 0
    for r in rows:
        n, k, m = r.raw.shape[0], r.raw.shape[1], r.meta.shape[1]
        raw = f[at:at + n * k].reshape(n, k)
        meta = f[at + n * k:at + n * (k + m)].reshape(n, m)
        aux = f[at + n * (k + m):at + n * (k + m + 1)]
        lengths = f[at + n * (k + m + 1):at + n * (k + m + 2)]
        at += n * (k + m + 2)
        ms: list[np.ndarray | None] = []
        for length in lengths.astype(int):
            if length < 0:
                ms.append(None)
                continue
            nbytes = (length + 7) // 8
            ms.append(np.unpackbits(data[bit_at:bit_at + nbytes])[:length].astype(bool))
            bit_at += nbytes
        out_rows.append(HostRows(raw, meta))
        out_aux.append(aux)
        out_masks.append(ms)
    return out_rows, out_aux, out_masks


def _dead_count(masks: list[np.ndarray | None]) -> float:
    """Units dead on every rank; NaN where a rank has no mask or ranks' units differ (cannot be matched)."""
    if any(m is None for m in masks) or len({m.size for m in masks if m is not None}) > 1:
        return float("nan")
    return float(np.logical_and.reduce(np.stack(masks)).sum())  # type: ignore[arg-type]


def _merge(raws: np.ndarray, counts: np.ndarray, moments: tuple[str, ...]) -> np.ndarray:
    """Rows ``(n, k)`` of the concatenation of every rank's parts ``raws`` ``(size, n, k)`` of ``counts`` ``(size, n)``.

    :func:`~gradprobe.quantities.tensor_stats.merge_moments` for n rows at once, in NumPy (one torch call per
    row was most of a flush's cost): sums and counts add, ``max |x|`` takes the max, plain norms add in squares,
    centred norms combine with the spread of the parts' means (Chan et al.); empty parts (a rank's empty shard)
    add nothing.
    """
    merged = raws.sum(0)  # (n, k): right for sums and counts
    if MAX_ABS in moments:
        merged[:, moments.index(MAX_ABS)] = raws[:, :, moments.index(MAX_ABS)].max(0)
    if ROOT_SSD in moments:
        sums, total = raws[:, :, moments.index(SUM)], counts.sum(0)  # (size, n), (n,)
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.where(counts > 0, sums / counts, 0.0)
            mean = np.where(total > 0, sums.sum(0) / total, 0.0)
        between = (counts * (means - mean) ** 2).sum(0)
        merged[:, moments.index(ROOT_SSD)] = np.sqrt(np.square(raws[:, :, moments.index(ROOT_SSD)]).sum(0) + between)
    if ROOT_SS in moments:
        merged[:, moments.index(ROOT_SS)] = np.sqrt(np.square(raws[:, :, moments.index(ROOT_SS)]).sum(0))
    return merged


def _combine_block(block: Block, parts: list[HostRows], aux: list[np.ndarray], masks: list[list[np.ndarray | None]],
                   me: int, world_size: int) -> tuple[HostRows, bool]:
    """Block ``block``'s combined rows from every rank's parts; and whether a replicated row differed."""
    raws = np.stack([p.raw for p in parts])  # (size, n, k)
    mine = parts[me]
    if block.spread == SAME:
        same = bool(np.allclose(raws, mine.raw[None], rtol=1e-6, atol=0.0, equal_nan=True))
        return mine, not same
    if block.spread == NORMS:
        return HostRows(np.sqrt(np.square(raws).sum(0)), mine.meta), False
    moments: tuple[str, ...] = getattr(block.quantity, "moments", ())
    metas, extra = np.stack([p.meta for p in parts]), np.stack(aux)  # (size, n, m), (size, n)
    if block.spread == SHARDS:  # meta already holds the global element count and shape
        return HostRows(_merge(raws, extra, moments), mine.meta), False
    raw, meta = _merge(raws, metas[:, :, 0], moments), mine.meta.copy()  # examples: counts are the ranks' numel
    # as pending._pooled_meta: the batch dimension of the concatenation grows by the other ranks' batches
    meta[:, 0], meta[:, 1] = metas[:, :, 0].sum(0), metas[0, :, 1] + extra[1:].sum(0)
    if R.DEAD_FRAC in block.stats:
        col = getattr(block.quantity, "dead_column", 0)
        raw[:, col] = [_dead_count([m[j] for m in masks]) for j in range(raw.shape[0])]
    if block.quantity.kind == R.DELTA:
        # Each rank's backward gave dL_r/d out; DDP and FSDP average gradients over ranks, so the loss the
        # optimizer descends is the ranks' mean and its delta is 1/size of each rank's (as grads are).
        raw[:, [i for i, m in enumerate(moments) if m in LINEAR]] /= world_size
    return HostRows(raw, meta), False


def combine(world: World, blocks: list[Block], rows: list[HostRows]) -> list[HostRows]:
    """Every block's rows combined over all ranks (see the module docstring); collective: call on every rank.

    Raises:
        GradprobeError: on every rank, if the ranks buffered different steps or rows since the last flush.
    """
    masks = _masks(blocks)
    payload, n_floats = _pack(blocks, rows, masks)
    headers = _gather(world, _signature(blocks, payload.size))  # (size, 6)
    if (headers[:, :5] != headers[world.rank, :5]).any():
        other = int(np.nonzero((headers[:, :5] != headers[0, :5]).any(1))[0][0])
        raise GradprobeError(
            f"distributed: ranks recorded different things before this flush (rank 0: {_describe(headers[0])}; "
            f"rank {other}: {_describe(headers[other])}); every rank must use the same every=, params= and "
            "modules= and flush together")
    if not blocks:
        return rows
    longest = int(headers[:, 5].max())
    padded = np.zeros(longest, dtype=np.uint8)
    padded[:payload.size] = payload
    gathered = _gather(world, padded)  # (size, longest)
    unpacked = [_unpack(blocks, rows, gathered[r], n_floats) for r in range(world.size)]
    out, differs = [], []
    for i, b in enumerate(blocks):
        row, differ = _combine_block(b, [u[0][i] for u in unpacked], [u[1][i] for u in unpacked],
                                     [u[2][i] for u in unpacked], world.rank, world.size)
        out.append(row)
        if differ:
            differs.append(b)
    if differs:
        b = differs[0]
        log.warning("distributed: %s rows of %s at step %d differ between ranks, though every rank should hold "
                    "the same (replicas out of sync, or gradients read before DDP's all-reduce); rank %d's are kept",
                    b.quantity.kind, b.names[0][0], b.step, world.rank)
    return out


__all__ = ["World", "check_cadence", "check_params", "combine", "current_world", "is_sharded", "local", "unwrap"]

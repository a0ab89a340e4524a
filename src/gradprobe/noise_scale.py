"""The simple noise scale B_simple (McCandlish et al. 2018) on a probe's cadence, from two batch sizes it already has.

* :func:`micro_batch_noise`: one process under gradient accumulation. Each micro-batch's gradient ``g_k``
  (``b`` examples) is read as backward hands it to the parameter, before it is accumulated; the
  accumulated ``.grad`` (``K b`` examples) is the big batch.
* :func:`noise_scale_hook`: a DDP communication hook. Each rank's local gradient (``b`` examples) is read
  from the bucket before it is all-reduced; the all-reduced gradient (``world x b``) is the big batch.

Both record kind ``noise`` (stats :data:`records.NOISE_STATS`) per parameter and for the whole model
(layer ``""``, tensor ``"model"``, squared norms summed over parameters) at the probe's recorded steps; on
other steps they cost one Python check per hook call. Values are of the unscaled gradients when the
``scaler`` is given; ``b_simple`` does not depend on the loss scale or on how the loss is averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from gradprobe import records as R
from gradprobe.blocks import Block
from gradprobe.errors import GradprobeError
from gradprobe.hooks import HookSet
from gradprobe.probe import Probe
from gradprobe.probe_options import split_name
from gradprobe.quantities.noise import NoiseStats

_QUANTITY = NoiseStats(R.NOISE_STATS)


def _check(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GradprobeError(f"batch_size: {batch_size!r} is not a positive int; pass the examples per "
                             "micro-batch (per rank under DDP), e.g. 32")


def noise_block(step: int, names: list[str], small: torch.Tensor, big: torch.Tensor,
                b_small: float, b_big: float) -> Block:
    """The kind-noise block: one row per parameter in ``names`` and a whole-model row.

    Args:
        small: ``(n,)`` mean squared norms of the small-batch gradients (``b_small`` examples each).
        big: ``(n,)`` squared norms of the big-batch gradient (``b_big`` examples).
    """
    small = torch.cat([small, small.sum()[None]])  # (n + 1,): whole model last
    big = torch.cat([big, big.sum()[None]])  # (n + 1,)
    rows = [split_name(n) for n in names] + [("", R.MODEL_TENSOR)]
    return Block(step, _QUANTITY, rows, _QUANTITY.stats, torch.stack([small, big], 1), [(b_small, b_big)] * len(rows))


class _Noise:
    """What both estimators share: the probe's parameters, its step, the loss scale and the step-time hook."""

    def __init__(self, probe: Probe, batch_size: int, scaler: torch.amp.GradScaler | None) -> None:
        _check(batch_size)
        self._probe, self._b, self._scaler = probe, batch_size, scaler
        self._named = [(n, p) for n, p in probe.model.named_parameters() if p.requires_grad]
        self._index = {id(p): i for i, (_, p) in enumerate(self._named)}
        self._hooks = HookSet()
        self._hooks.optimizer(None, self._at_step, lambda opt: None)
        self._step = -1  # the probe step whose values are held

    def _due(self) -> bool:
        """Whether the probe records the current step; drops values held from an earlier (e.g. skipped) step."""
        if self._probe.step_count != self._step:
            self._step = self._probe.step_count
            self._reset()
        return self._probe.due

    def _unscale(self, sq: torch.Tensor) -> torch.Tensor:
        scale = None if self._scaler is None or not self._scaler.is_enabled() else self._scaler._get_scale_async()
        return sq if scale is None else sq / scale.to(sq.device, sq.dtype).square()

    def _at_step(self, optimizer: torch.optim.Optimizer) -> None:
        ours = any(id(p) in self._index for g in optimizer.param_groups for p in g["params"])
        if ours and self._step == self._probe.step_count:
            self._record()
        self._reset()

    def _reset(self) -> None:
        raise NotImplementedError

    def _record(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        """Remove every hook (idempotent)."""
        self._hooks.remove_all()


class MicroBatchNoise(_Noise):
    """Gradient accumulation: see :func:`micro_batch_noise`."""

    def __init__(self, probe: Probe, batch_size: int, scaler: torch.amp.GradScaler | None) -> None:
        super().__init__(probe, batch_size, scaler)
        self._reset()
        for i, (_, p) in enumerate(self._named):
            self._hooks.tensor(p, partial(self._micro, i))
            self._hooks.accumulated(p, partial(self._accumulated, i))

    def _reset(self) -> None:
        self._sq: list[list[torch.Tensor]] = [[] for _ in self._named]  # per parameter, |g_k|^2 of each backward
        self._big: list[torch.Tensor | None] = [None] * len(self._named)  # |accumulated grad|^2

    def _micro(self, i: int, grad: torch.Tensor) -> None:
        if self._due():
            self._sq[i].append(grad.detach().float().square().sum())

    def _accumulated(self, i: int, param: torch.Tensor) -> None:
        if self._due() and param.grad is not None:
            self._big[i] = param.grad.detach().float().square().sum()

    def _record(self) -> None:
        held = [i for i, big in enumerate(self._big) if big is not None and self._sq[i]]
        counts = {len(self._sq[i]) for i in held}
        if len(counts) != 1 or min(counts) < 2:
            return  # fewer than two micro-batches (or parameters seen unequally often): no second batch size
        k = counts.pop()
        # The accumulated .grad is the big batch's mean gradient, G_big = (1/K) sum_k g_k, so each backward
        # contributed g_k / K: |g_k|^2 = K^2 |contribution|^2, and their mean is K sum_k |contribution|^2.
        small = torch.stack([k * torch.stack(self._sq[i]).sum() for i in held])  # (n,)
        big = torch.stack([self._big[i] for i in held])  # type: ignore[misc]  # (n,)
        self._probe.push([noise_block(self._step, [self._named[i][0] for i in held], self._unscale(small),
                                      self._unscale(big), self._b, k * self._b)])


def micro_batch_noise(probe: Probe, batch_size: int, scaler: torch.amp.GradScaler | None = None) -> MicroBatchNoise:
    """Record B_simple at the probe's recorded steps from the micro-batches of gradient accumulation.

    Every backward of a step is one micro-batch of ``batch_size`` examples (``K >= 2`` per step, all of
    the same size, the loss a mean over the micro-batch, optionally divided by ``K``); a step with one
    backward records nothing. Cost on recorded steps: two squared norms per parameter per backward.

    Args:
        probe: the attached probe; its cadence decides the steps and its records hold the values.
        batch_size: examples per micro-batch.
        scaler: the loop's ``GradScaler``, to record the unscaled squared norms.

    Returns:
        The handle; ``detach()`` removes its hooks.

    Raises:
        GradprobeError: for a ``batch_size`` that is not a positive int.
    """
    return MicroBatchNoise(probe, batch_size, scaler)


class DDPNoise(_Noise):
    """A DDP communication hook: see :func:`noise_scale_hook`."""

    def __init__(self, probe: Probe, batch_size: int, scaler: torch.amp.GradScaler | None,
                 group: dist.ProcessGroup | None) -> None:
        super().__init__(probe, batch_size, scaler)
        self._group = group
        # DDP's default hook takes None for the default group, though it is annotated as a ProcessGroup
        self._reduce_group = cast(dist.ProcessGroup, group)
        self._reset()

    def _reset(self) -> None:
        self._local: dict[int, torch.Tensor] = {}  # parameter index -> this rank's |g_local|^2
        self._reduced: dict[int, torch.Tensor] = {}  # parameter index -> |all-reduced g|^2

    def hook(self, state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        """Read the bucket's local gradients, all-reduce them as DDP's default hook does, read the result."""
        if not self._due():
            return allreduce_hook(self._reduce_group, bucket)
        grads = bucket.gradients()
        index = [self._index.get(id(p), -1) for p in bucket.parameters()]
        for i, g in zip(index, grads):  # before the all-reduce overwrites the bucket
            if i >= 0:
                self._local[i] = g.detach().float().square().sum()
        sizes = [g.numel() for g in grads]

        def reduced(fut: torch.futures.Future[Any]) -> torch.Tensor:
            value = fut.value()
            flat = value[0] if isinstance(value, list) else value  # the bucket: parameters' gradients end to end
            for i, piece in zip(index, flat.split(sizes)):
                if i >= 0:
                    self._reduced[i] = piece.detach().float().square().sum()
            return flat

        return allreduce_hook(self._reduce_group, bucket).then(reduced)

    def _record(self) -> None:
        held = sorted(set(self._local) & set(self._reduced))
        if not held:
            return
        world = dist.get_world_size(self._group)
        small = torch.stack([self._local[i] for i in held])  # (n,)
        dist.all_reduce(small, group=self._group)  # one small collective per recorded step
        big = torch.stack([self._reduced[i] for i in held])  # (n,)
        self._probe.push([noise_block(self._step, [self._named[i][0] for i in held], self._unscale(small / world),
                                      self._unscale(big), self._b, world * self._b)])


# DDP checks a comm hook's annotations against the classes themselves; postponed (string) annotations fail it.
DDPNoise.hook.__annotations__.update(bucket=dist.GradBucket, **{"return": torch.futures.Future[torch.Tensor]})


def noise_scale_hook(probe: Probe, batch_size: int, scaler: torch.amp.GradScaler | None = None,
                     group: dist.ProcessGroup | None = None) -> Callable[[Any, dist.GradBucket], Any]:
    """A DDP communication hook that records B_simple from local and all-reduced gradients on recorded steps.

    Register it on every rank: ``ddp_model.register_comm_hook(None, noise_scale_hook(probe, batch_size))``.
    It all-reduces as DDP's default hook does (mean over ranks). The small batch is one rank's
    ``batch_size`` examples, ``|G_small|^2`` the mean over ranks of the local squared norms (one extra
    all-reduce of one number per parameter at the optimizer step); the big batch is ``world x batch_size``.
    Every rank must record the same steps (the probe's cadence, not a time budget).

    Args:
        probe: the attached probe on this rank.
        batch_size: examples per rank per step.
        scaler: the loop's ``GradScaler``, to record the unscaled squared norms.
        group: the process group DDP reduces over (None: the default group).

    Returns:
        The hook, a bound method of a :class:`DDPNoise`: ``hook.__self__.detach()`` removes its step hook.

    Raises:
        GradprobeError: for a ``batch_size`` that is not a positive int.
    """
    return DDPNoise(probe, batch_size, scaler, group).hook  # DDP wants a function with a __name__


__all__ = ["DDPNoise", "MicroBatchNoise", "micro_batch_noise", "noise_block", "noise_scale_hook"]

"""(1) Probe overhead: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, random MNIST-shaped data.

Amortised cost is timed as a user meets it: the wall time of a whole run (attach, every step,
every flush, detach) divided by its steps. A median step time would hide the recorded steps
among the unrecorded ones at ``every=10``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gradprobe.probe import Probe

WARMUP = 5  # untimed steps before each run: first-touch allocations belong to no variant


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 784
    for _ in range(6):
        layers += [nn.Linear(width, 256), nn.ReLU()]
        width = 256
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _naive_hook(model: nn.Module) -> Callable[[], None]:
    """What people write by hand: one ``.item()`` per statistic per parameter, every step."""
    log: list[float] = []

    def record() -> None:
        for p in model.parameters():
            g = p.grad
            assert g is not None
            log.extend([g.mean().item(), g.abs().mean().item(), g.std().item(), g.norm().item(),
                        g.abs().max().item(), (g == 0).float().mean().item(), (~torch.isfinite(g)).sum().item()])
            log.extend([p.mean().item(), p.std().item(), p.norm().item()])

    return record


def mlp_step(model: nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, torch.Tensor],
             rank: int = 0, world: int = 1) -> Callable[..., None]:
    """``train_step(i, extra=None)``: one step on batch ``i`` of ``data`` (this rank's 128 of ``world`` x 128).

    ``extra`` runs between backward and the optimizer step (a naive hook); the loss is read every step,
    as a training loop that logs it does. ``model`` may be a compiled or DDP wrapper of the probed model.
    """
    x, y = data

    def train_step(i: int, extra: Callable[[], None] | None = None) -> None:
        lo = (i * 128 * world + rank * 128) % len(x)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[lo:lo + 128]), y[lo:lo + 128])
        loss.backward()
        if extra is not None:
            extra()
        opt.step()
        float(loss.detach())

    return train_step


def _time_variant(variant: str, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean seconds per step of one whole run of ``variant``, attach and final flush included."""
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step = mlp_step(model, opt, data)
    for i in range(WARMUP):
        train_step(i)
    start = time.perf_counter()
    probe = None
    if variant.startswith("probe"):
        cadence = {"probe every step": {"every": 1}, "probe every 10 steps": {"every": 10},
                   "probe budget 2% (watch default)": {"budget": 0.02}}[variant]
        probe = Probe(model, opt, **cadence)  # type: ignore[arg-type]
    naive = _naive_hook(model) if variant == "naive .item() hook" else None
    for i in range(steps):
        train_step(i, naive)
    if probe is not None:
        probe.detach()  # moves the last buffered records to the host: part of the cost
    return (time.perf_counter() - start) / steps


VARIANTS = ("uninstrumented", "probe every step", "probe every 10 steps", "probe budget 2% (watch default)",
            "naive .item() hook")


def _run_threads(threads: int, reps: int, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, object]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(reps):
            for variant in VARIANTS:  # interleaved: A B C D A B C D ...
                samples[variant].append(_time_variant(variant, steps, data))
    finally:
        torch.set_num_threads(before)
    med = {v: float(np.median(s)) for v, s in samples.items()}
    base = med["uninstrumented"]
    return {"threads": threads, "step_seconds": med, "all": samples,
            "overhead": {v: med[v] / base - 1 for v in VARIANTS[1:]}}


def run(reps: int, steps: int = 200, threads: tuple[int, ...] = (1, 2)) -> dict[str, object]:
    """Per thread count: median over ``reps`` interleaved whole runs of the mean step time, and overheads."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    return {"reps": reps, "steps": steps, "by_threads": [_run_threads(t, reps, steps, data) for t in threads]}

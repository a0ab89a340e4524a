"""(1) Probe overhead: MLP 784 -> 6 x 256 -> 10, batch 128, Adam, random MNIST-shaped data."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gradprobe.probe import Probe

STATS = ("mean", "mean_abs", "std", "norm", "max_abs", "zero_frac", "nonfinite")


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


def _time_variant(variant: str, steps: int, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Median seconds per training step of one variant."""
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data
    probe = None
    naive = _naive_hook(model) if variant == "naive .item() hook" else None
    if variant.startswith("probe"):
        probe = Probe(model, opt, every=1 if variant == "probe every step" else 10)
    times = []
    for i in range(steps):
        xb, yb = x[(i * 128) % 2048:(i * 128) % 2048 + 128], y[(i * 128) % 2048:(i * 128) % 2048 + 128]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        if naive is not None:
            naive()
        opt.step()
        float(loss.detach())
        times.append(time.perf_counter() - start)
    if probe is not None:
        probe.detach()
    return float(np.median(times[3:]))  # skip warm-up steps


VARIANTS = ("uninstrumented", "probe every step", "probe every 10 steps", "naive .item() hook")


def run(reps: int, steps: int = 40) -> dict[str, object]:
    """Median step time per variant over ``reps`` interleaved repetitions, and overhead ratios."""
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen))
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(reps):
        for variant in VARIANTS:  # interleaved: A B C D A B C D ...
            samples[variant].append(_time_variant(variant, steps, data))
    med = {v: float(np.median(s)) for v, s in samples.items()}
    base = med["uninstrumented"]
    return {"reps": reps, "steps": steps, "step_seconds": med,
            "overhead": {v: med[v] / base - 1 for v in VARIANTS[1:]}}

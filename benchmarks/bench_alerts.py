"""Live alerts' cost: seconds per flush of ``AlertMonitor.update``, on runs of 2000 steps recorded every step.

Two 6-hidden-layer MLPs, batch 128, 1 thread, flush every 64 recorded steps (the default): the benchmark MLP
(784 -> 6 x 256 -> 10, ReLU, Adam: healthy, no alert) and a sigmoid one with N(0, 1) weights (2 -> 6 x 16 -> 1,
SGD: vanishing, then recovering, so alerts fire and their onsets are computed). Each flush's evaluation is timed
by wrapping ``AlertMonitor.update`` (wall and process CPU time: the CPU time is less inflated on a loaded machine);
the whole run is timed with alerts on and off.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_alerts.py [steps]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import _model  # noqa: E402

from gradprobe import alerts  # noqa: E402
from gradprobe.probe import Probe  # noqa: E402


def _sigmoid(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    sizes = [2] + [16] * 6
    for a, b in zip(sizes, sizes[1:]):
        lin = nn.Linear(a, b)
        nn.init.normal_(lin.weight, 0.0, 1.0)
        layers += [lin, nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(16, 1))


def _setup(name: str) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, nn.Module]:
    gen = torch.Generator().manual_seed(0)
    if name == "mlp784":
        model = _model(0)
        x, y = torch.rand(2048, 784, generator=gen), torch.randint(0, 10, (2048,), generator=gen)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, nn.CrossEntropyLoss()
    model = _sigmoid(0)
    x = torch.randn(2048, 2, generator=gen)
    y = ((x ** 2).sum(1) < 1.4).float()[:, None]
    return model, torch.optim.SGD(model.parameters(), lr=1.0), x, y, nn.BCEWithLogitsLoss()


def _run(name: str, steps: int, on: bool) -> dict[str, object]:
    model, opt, x, y, loss_fn = _setup(name)
    spent: list[float] = []
    cpu: list[float] = []
    update = alerts.AlertMonitor.update

    def timed(self: alerts.AlertMonitor, *args: object) -> list[alerts.Alert]:
        start, start_cpu = time.perf_counter(), time.process_time()
        out = update(self, *args)  # type: ignore[arg-type]
        spent.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        return out

    alerts.AlertMonitor.update = timed  # type: ignore[method-assign]
    raised: list[alerts.Alert] = []
    try:
        start = time.perf_counter()
        with Probe(model, opt, alerts=on, on_alert=raised.append):
            for i in range(steps):
                idx = torch.arange(i * 128, (i + 1) * 128) % len(x)
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
        wall = time.perf_counter() - start
    finally:
        alerts.AlertMonitor.update = update  # type: ignore[method-assign]
    out: dict[str, object] = {"wall_seconds": wall, "flushes": len(spent), "alerts": len(raised)}
    if spent:
        out.update(flush_seconds_median=float(np.median(spent)), flush_seconds_mean=float(np.mean(spent)),
                   flush_seconds_max=float(np.max(spent)), flush_cpu_seconds_median=float(np.median(cpu)),
                   alerts_share_of_wall=float(np.sum(spent) / wall))
    return out


def run(steps: int = 2000) -> dict[str, object]:
    """Per model: the run with alerts off, then on (timed per flush)."""
    torch.set_num_threads(1)
    found: dict[str, object] = {"steps": steps, "load_average": os.getloadavg()[0]}
    for name in ("mlp784", "sigmoid16"):
        off, on = _run(name, steps, False), _run(name, steps, True)
        found[name] = {"alerts_off": off, "alerts_on": on}
    return found


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))

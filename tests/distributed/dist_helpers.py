"""Shared by the distributed tests: a 2-rank gloo launcher, the tiny model and data, and a NumPy reference.

The launcher picks a free port per job, gives it a deadline, kills what is still alive when the job
fails or overruns, and every rank destroys its process group on the way out. The reference trains
the same model unwrapped in this process on the full batch and computes each statistic by hand.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

WORLD = 2
BATCH = 16  # the global batch; each rank trains on BATCH // WORLD examples
STEPS = 3
LR = 0.1
DEADLINE = 45.0  # seconds a job may take before its processes are killed
# Ranks fork from a server that imported these once: a spawned rank spends seconds importing torch and
# torch._dynamo (DDP and the optimizers load it), every test again.
multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed", "pandas", "gradprobe.probe",
                                        "gradprobe.store.writer"])


def free_port() -> int:
    """A TCP port free on this host right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., None], port: int, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=30))
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(rank, *args)`` on WORLD spawned gloo ranks; raises what a rank raised, or on the deadline."""
    ctx = mp.start_processes(_entry, args=(fn, free_port(), args), nprocs=WORLD, join=False, start_method="forkserver")
    end = time.monotonic() + DEADLINE
    try:
        while not ctx.join(timeout=0.2):
            if time.monotonic() > end:
                raise TimeoutError(f"distributed job did not finish within {DEADLINE} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: feature 0 is positive on the first half (rank 0's) and negative on the second."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 4, generator=g)
    x[:, 0] = torch.linspace(1.0, 2.0, BATCH) * torch.where(torch.arange(BATCH) < BATCH // WORLD, 1.0, -1.0)
    return x, torch.randn(BATCH, 1, generator=g)


def model() -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear with the same init in every process.

    ReLU unit 0 of layer 0 follows feature 0 (dead on rank 1's half only: alive over the global batch),
    unit 1 has a bias of -100 (dead everywhere). The last Linear has one output, so under FSDP2 on two
    ranks rank 1 holds an empty shard of it.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        net[0].bias[0] = 0.0
        net[0].bias[1] = -100.0
    return net


def shard(rank: int) -> slice:
    """This rank's rows of the global batch."""
    per = BATCH // WORLD
    return slice(rank * per, (rank + 1) * per)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """STEPS steps of SGD on the mean squared error of this batch."""
    for _ in range(STEPS):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def _stats(v: np.ndarray) -> dict[str, float]:
    v = v.astype(np.float64).ravel()
    return {"mean": v.mean(), "mean_abs": np.abs(v).mean(), "std": v.std(ddof=1) if v.size > 1 else 0.0,
            "norm": np.linalg.norm(v), "max_abs": np.abs(v).max()}


def reference() -> dict[tuple[int, str, str, str, str], float]:
    """``(step, layer, tensor, kind, stat) -> value`` of the unwrapped model trained on the full batch, by hand."""
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    outs: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            outs[name] = out.detach().clone()
            out.register_hook(lambda g: deltas.__setitem__(name, g.detach().clone()))
        return hook

    for name, module in net.named_children():
        module.register_forward_hook(keep(name))
    ref: dict[tuple[int, str, str, str, str], float] = {}
    for step in range(STEPS):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        for n, p in net.named_parameters():
            layer, tensor = n.split(".")
            assert p.grad is not None
            for stat, v in _stats(p.grad.numpy()).items():
                ref[(step, layer, tensor, "grad", stat)] = v
            for stat, v in _stats(p.detach().numpy()).items():
                ref[(step, layer, tensor, "weight", stat)] = v
        opt.step()
        for n, p in net.named_parameters():
            layer, tensor = n.split(".")
            ref[(step, layer, tensor, "weight", "update_ratio")] = float(
                np.linalg.norm((p.detach() - before[n]).numpy()) / np.linalg.norm(before[n].numpy()))
        for name, out in outs.items():
            for stat, v in _stats(out.numpy()).items():
                ref[(step, name, "output", "activation", stat)] = v
            if isinstance(net.get_submodule(name), nn.ReLU):  # dead: output 0 for every example of the batch
                ref[(step, name, "output", "activation", "dead_frac")] = float((out == 0).all(0).float().mean())
            for stat, v in _stats(deltas[name].numpy()).items():
                ref[(step, name, "output", "delta", stat)] = v
    return ref


def compare(frame: Any, ref: dict[tuple[int, str, str, str, str], float], kinds: dict[str, tuple[str, ...]]) -> int:
    """Assert every recorded ``kinds[kind]`` stat of ``frame`` equals the reference; the number compared."""
    got = frame.set_index(["step", "layer", "tensor", "kind", "stat"])["value"]
    checked = 0
    for key, value in ref.items():
        if key[4] in kinds.get(key[3], ()):
            np.testing.assert_allclose(got.loc[key], value, rtol=1e-5, atol=1e-7, err_msg=str(key))
            checked += 1
    return checked

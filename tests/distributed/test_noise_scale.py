"""B_simple under DDP (2 gloo ranks): local vs all-reduced gradients, against the estimator from per-example gradients.

A small launcher of its own: two spawned ranks meet through a file in a temp directory (no port), get a
deadline, and are killed if they overrun or one fails. The reference trains the same model unwrapped in
this process on the full batch, and computes the estimator by hand from one backward per example.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradprobe import records as R
from gradprobe.noise_scale import noise_scale_hook
from gradprobe.probe import Probe

WORLD, LOCAL, STEPS, LR = 2, 6, 3, 0.3  # ranks, examples per rank per step, steps, SGD learning rate
DEADLINE = 60.0  # seconds before the ranks are killed


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: WORLD x LOCAL examples, rank r holding rows r*LOCAL to (r+1)*LOCAL."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * LOCAL, 4, generator=g), torch.randint(0, 3, (WORLD * LOCAL,), generator=g)


def rank_main(rank: int, tmp: str) -> None:
    """One rank: DDP with the noise-scale comm hook, the probe recording every step; rank 0 saves its frame."""
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        ddp = DistributedDataParallel(make())
        opt = torch.optim.SGD(ddp.parameters(), lr=LR)
        probe = Probe(ddp, opt, every=1)
        ddp.register_comm_hook(None, noise_scale_hook(probe, LOCAL))
        for step in range(STEPS):
            x, y = batch(step)
            part = slice(rank * LOCAL, (rank + 1) * LOCAL)
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x[part]), y[part]).backward()
            opt.step()
        frame = probe.frame()
        probe.detach()
        if rank == 0:
            frame.to_pickle(f"{tmp}/frame.pkl")
    finally:
        dist.destroy_process_group()


def launch(tmp: Path) -> None:
    """Run ``rank_main`` on WORLD spawned processes; kill them all if one fails or the deadline passes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=rank_main, args=(r, str(tmp))) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(DEADLINE)
    finally:
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
            p.join()
    assert not alive, "a rank overran its deadline"
    assert [p.exitcode for p in procs] == [0] * WORLD


def expected() -> list[dict[str, dict[str, float]]]:
    """Per step, ``{parameter name or "": {stat: value}}`` from per-example gradients of the unwrapped model."""
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    out = []
    for step in range(STEPS):
        x, y = batch(step)
        grads: dict[str, list[np.ndarray]] = {n: [] for n, _ in model.named_parameters()}
        for xi, yi in zip(x, y):
            model.zero_grad()
            nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
            for n, p in model.named_parameters():
                grads[n].append(p.grad.double().numpy().ravel().copy())
        small, big = {}, {}
        for n, rows in grads.items():
            local = np.stack(rows).reshape(WORLD, LOCAL, -1).mean(1)  # (WORLD, numel): each rank's gradient
            small[n] = float((local**2).sum(1).mean())
            big[n] = float((local.mean(0) ** 2).sum())
        small[""], big[""] = sum(small.values()), sum(big.values())
        b, bb = LOCAL, WORLD * LOCAL
        step_rows = {}
        for n in small:
            g2 = (bb * big[n] - b * small[n]) / (bb - b)
            tr = (small[n] - big[n]) / (1 / b - 1 / bb)
            step_rows[n] = {R.B_SIMPLE: tr / g2, R.GRAD_SQ: g2, R.TRACE_SIGMA: tr, R.GRAD_SQ_SMALL: small[n],
                            R.GRAD_SQ_BIG: big[n], R.B_SMALL: b, R.B_BIG: bb}
        out.append(step_rows)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()  # what DDP's averaged gradient is
        opt.step()
    return out


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_noise_scale_matches_per_example_estimator(tmp_path: Path) -> None:
    launch(tmp_path)
    frame = pd.read_pickle(tmp_path / "frame.pkl")
    rows = frame[frame.kind == R.NOISE]
    assert sorted(set(rows.step)) == list(range(STEPS))
    truth = expected()
    names = [n for n, _ in make().named_parameters()] + [""]
    for step in range(STEPS):
        at = rows[rows.step == step]
        seen = {f"{layer}.{tensor}" if layer else "" for layer, tensor in zip(at.layer, at.tensor)}
        assert seen == set(names)
        for (layer, tensor), group in at.groupby(["layer", "tensor"]):
            name = f"{layer}.{tensor}" if layer else ""
            got = group.set_index("stat").value
            for stat, value in truth[step][name].items():
                assert got[stat] == pytest.approx(value, rel=1e-4, abs=1e-12), (step, name, stat)

"""The probe under FSDP2 (fully_shard on a 2-rank gloo mesh) records the full parameters' statistics, not a shard's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dist_helpers import LR, WORLD, compare, data, launch, model, reference, shard, train
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from gradprobe import Probe, ProbeOptions

KINDS = {"grad": ("norm", "mean_abs", "max_abs", "std"), "weight": ("norm", "mean", "update_ratio"),
         "activation": ("mean", "std", "dead_frac"), "delta": ("norm", "mean_abs")}


def _train_fsdp(rank: int, out: str) -> None:
    net = model()
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (net[0], net[2], net[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    x, y = data()
    shards: dict[str, float] = {}

    def keep_shard_norms(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if not shards:  # step 0: what a per-shard reading would report
            shards.update({n: float(p.grad.to_local().norm()) for n, p in net.named_parameters()})

    opt.register_step_pre_hook(keep_shard_norms)
    with Probe(net, opt, every=1, options=ProbeOptions(flush_every=2, structure=False)) as probe:
        train(net, x[shard(rank)], y[shard(rank)], opt)
    pd.to_pickle({"frame": probe.frame(), "shards": shards}, Path(out) / f"rank{rank}.pkl")


@pytest.mark.timeout(60)
def test_fsdp2_stats_are_of_the_full_parameter_and_gradient(tmp_path: Path) -> None:
    launch(_train_fsdp, str(tmp_path))
    ranks = [pd.read_pickle(tmp_path / f"rank{r}.pkl") for r in range(WORLD)]
    ref = reference()
    assert compare(ranks[0]["frame"], ref, KINDS) == len([k for k in ref if k[4] in KINDS.get(k[3], ())])
    pd.testing.assert_frame_equal(ranks[0]["frame"], ranks[1]["frame"])
    # The check has teeth: a norm read from one shard alone misses the tolerance by far, and over the
    # ranks its root-mean-square is the full norm / sqrt(2), the shard-count error this guards against.
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):  # both shards hold entries (4.* sit on rank 0)
        full = ref[(0, *name.split("."), "grad", "norm")]  # type: ignore[index]
        alone = np.array([ranks[r]["shards"][name] / full for r in range(WORLD)])
        assert (np.abs(alone - 1) > 0.01).all(), (name, alone)  # 1000x the tolerance of compare()
        np.testing.assert_allclose(np.sqrt(np.mean(alone**2)), 1 / np.sqrt(WORLD), rtol=1e-5)
    assert ranks[1]["shards"]["4.bias"] == 0.0  # rank 1's shard of the 1-element bias is empty

"""The probe under DistributedDataParallel (2 gloo ranks on CPU) equals the unwrapped model on the full batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dist_helpers import LR, compare, data, launch, model, reference, shard, train
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradprobe import Probe, ProbeOptions
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import list_runs, load_run
from gradprobe.store.writer import RunWriter

KINDS = {"grad": ("norm", "mean_abs", "max_abs", "std"), "weight": ("norm", "mean", "std", "update_ratio"),
         "activation": ("mean", "std", "dead_frac"), "delta": ("mean_abs", "std", "norm")}


def _train_ddp(rank: int, store: str, out: str) -> None:
    ddp = DistributedDataParallel(model())
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    writer = RunWriter(store, "ddp-job", config={}, env={}, meta={}) if rank == 0 else None
    sunk: list[int] = []

    def sink(stats: pd.DataFrame, hists: pd.DataFrame) -> None:  # passed on every rank: only rank 0's is called
        sunk.append(len(stats))
        if writer is not None:
            writer.add_stats(stats)

    x, y = data()
    with Probe(ddp, opt, every=1, sink=sink, options=ProbeOptions(flush_every=2, structure=False)) as probe:
        train(ddp, x[shard(rank)], y[shard(rank)], opt)
    frame = probe.frame()
    if writer is not None:
        writer.finish("finished")
    pd.to_pickle({"frame": frame, "sunk": sunk}, Path(out) / f"rank{rank}.pkl")


@pytest.mark.timeout(60)
def test_ddp_stats_equal_the_unwrapped_model_on_the_full_batch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    launch(_train_ddp, str(store), str(tmp_path))
    ranks = [pd.read_pickle(tmp_path / f"rank{r}.pkl") for r in range(2)]
    ref = reference()
    # every stat of every step: grads read after the all-reduce, outputs combined over both halves
    assert compare(ranks[0]["frame"], ref, KINDS) == len([k for k in ref if k[4] in KINDS.get(k[3], ())])
    pd.testing.assert_frame_equal(ranks[0]["frame"], ranks[1]["frame"])  # every rank holds the combined frame
    assert set(ranks[0]["frame"].query("kind == 'grad'")["layer"]) == {"0", "2", "4"}  # no "module." prefix
    # written by rank 0 only: one run, holding every record; rank 1's sink never called
    assert ranks[1]["sunk"] == [] and sum(ranks[0]["sunk"]) == len(ranks[0]["frame"])
    runs = list_runs(store)
    assert list(runs["run_id"]) == ["ddp-job"]
    stored = load_run("ddp-job", store).frame()
    assert len(stored) == len(ranks[0]["frame"])
    compare(stored, ref, KINDS)  # read back by the store's reader, float32 on disk


def test_the_dead_fraction_is_of_the_global_batch_not_a_rank_s() -> None:
    """The check above has teeth: each half alone gives other dead fractions and spreads than the whole batch."""
    net, (x, _) = model(), data()
    relu_out = nn.Sequential(net[0], net[1])(x).detach()
    whole = (relu_out == 0).all(0).float().mean()
    halves = [(relu_out[shard(r)] == 0).all(0).float().mean() for r in range(2)]
    assert whole == 1 / 8 and max(halves) == 2 / 8  # unit 0 dead on rank 1's half only, unit 1 everywhere
    assert not np.isclose(relu_out.std().item(), relu_out[shard(0)].std().item(), rtol=1e-2)


def _mismatched(rank: int, out: str) -> None:
    ddp = DistributedDataParallel(model())
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    x, y = data()
    with pytest.raises(GradprobeError, match=r"^budget=0.02: a timed cadence differs between ranks"):
        Probe(ddp, opt, budget=0.02)  # each rank would time itself and record other steps
    try:
        with Probe(ddp, opt, every=1 + rank, options=ProbeOptions(flush_every=2, structure=False)):
            train(ddp, x[shard(rank)], y[shard(rank)], opt)  # flushes after 2 steps: rank 1 recorded 1
        message = ""
    except GradprobeError as exc:
        message = str(exc)
    Path(out, f"rank{rank}.txt").write_text(message)


@pytest.mark.timeout(60)
def test_ranks_with_different_cadences_fail_on_both_ranks_instead_of_hanging(tmp_path: Path) -> None:
    launch(_mismatched, str(tmp_path))
    for r in range(2):
        message = (tmp_path / f"rank{r}.txt").read_text()
        assert message.startswith("distributed: ranks recorded different things before this flush"), message
        assert "rank 0: 2 steps (0..1)" in message and "rank 1: 1 steps (0..0)" in message


def _session(rank: int, store: str) -> None:
    from gradprobe.integrations.session import ProbeSession

    ddp = DistributedDataParallel(model())
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    session = ProbeSession(ddp, store=store, experiment="ddp-session", every=1,
                           options=ProbeOptions(flush_every=2, structure=False))
    assert session.lead == (rank == 0) and (session.writer is not None) == (rank == 0)
    default = ProbeSession(ddp, store=False)  # the callbacks' default: a fixed cadence (a timed budget is refused)
    assert default.probe.cost["budget"] is None
    default.probe.detach()
    x, y = data()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x[shard(rank)]), y[shard(rank)]).backward()
        session.before_update()
        opt.step()
        session.after_update()
    session.finish()


@pytest.mark.timeout(60)
def test_a_trainer_session_under_ddp_stores_one_run_of_the_whole_job(tmp_path: Path) -> None:
    """What the Lightning/HF/Keras callbacks build: rank 0 alone writes, and the stats are the full batch's."""
    store = tmp_path / "store"
    launch(_session, str(store))
    runs = list_runs(store)
    assert len(runs) == 1 and runs["status"].iloc[0] == "finished"
    compare(load_run(runs["run_id"].iloc[0], store).frame(), reference(), KINDS)

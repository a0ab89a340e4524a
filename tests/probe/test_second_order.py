"""Sharpness and gradient SNR recorded on the probe's cadences; oracles: the dense Hessian and a per-example loop.

The dense Hessian of a tiny model comes from ``torch.autograd.functional.hessian`` over its flattened
parameters; the SNR from one backward per example, in float64. Values are also read back from a run store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call

from gradprobe import Probe, ProbeOptions
from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.quantities.curvature import top_hessian_eigenvalue
from gradprobe.report.figures import save_figures
from gradprobe.store.reader import Run
from gradprobe.store.writer import RunWriter

LOSS = nn.CrossEntropyLoss()


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 3, generator=gen), torch.randint(0, 3, (16,), generator=gen)


def _dense_top_eig(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Eigenvalue of largest magnitude of the dense Hessian over all parameters, in float64."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    model64 = _model().double()

    def loss(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return LOSS(functional_call(model64, params, (x.double(),)), y)

    eigs = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat).numpy())
    return float(eigs[np.argmax(np.abs(eigs))])


def _loop_snr(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per-parameter SNR from one backward per example: ||mean g||^2 / mean ||g_i - mean g||^2, float64."""
    per: dict[str, list[np.ndarray]] = {n: [] for n, _ in model.named_parameters()}
    for i in range(len(x)):
        grads = torch.autograd.grad(LOSS(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        for (n, _), g in zip(model.named_parameters(), grads):
            per[n].append(g.double().reshape(-1).numpy())
    out = {}
    for n, rows in per.items():
        g = np.stack(rows)
        mean = g.mean(0)
        out[n] = float(mean @ mean / ((g - mean) ** 2).sum(1).mean())
    return out


def _train(steps: int, sink: object = None, **second: object) -> tuple[Probe, dict[int, dict[str, torch.Tensor]]]:
    """Train with the probe; returns it and the weights at every step (before that step's update)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    weights = {}
    options = ProbeOptions(sharpness_iters=2000, sharpness_tol=1e-10, snr_examples=12)
    with Probe(model, opt, options=options, sink=sink, **second) as probe:  # type: ignore[arg-type]
        for step in range(steps):
            weights[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
            x, y = _batch(step)
            opt.zero_grad()
            LOSS(model(x), y).backward()
            grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
            probe.second_order(LOSS, (x, y))
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))  # .grad untouched
            opt.step()
    return probe, weights


def _at(weights: dict[str, torch.Tensor]) -> nn.Module:
    model = _model()
    model.load_state_dict(weights)
    return model


def test_recorded_values_equal_dense_hessian_and_per_example_loop(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "second", config={}, env={}, meta={}) as writer:
        def sink(stats: pd.DataFrame, hists: pd.DataFrame) -> None:
            writer.add_stats(stats)

        probe, weights = _train(5, sink, sharpness_every=2, snr_every=3)
    frame = probe.frame()
    eig = frame[(frame.kind == R.CURVATURE) & (frame.stat == R.TOP_HESSIAN_EIG)]
    assert list(eig.step) == [0, 2, 4] and set(eig.layer) == {""}
    for step, value in zip(eig.step, eig.value):
        x, y = _batch(step)
        model = _at(weights[step])
        assert value == pytest.approx(_dense_top_eig(model, x, y), rel=1e-5)
        gen = torch.Generator().manual_seed(int(step))  # the probe's start vector: same function, same numbers
        assert value == top_hessian_eigenvalue(model, LOSS, (x, y), 2000, 1e-10, generator=gen)[0]
    snr = frame[(frame.kind == R.SNR) & (frame.stat == R.GRAD_SNR)]
    assert sorted(set(snr.step)) == [0, 3]
    for step in (0, 3):
        x, y = _batch(step)
        want = _loop_snr(_at(weights[step]), x[:12], y[:12])
        got = {f"{r.layer}.{r.tensor}": r.value for r in snr[snr.step == step].itertuples()}
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-4)
    stored = Run(writer.path).frame(kind=[R.CURVATURE, R.SNR])
    mine = frame[frame.kind.isin([R.CURVATURE, R.SNR])].reset_index(drop=True)
    assert list(stored.stat) == list(mine.stat)
    np.testing.assert_allclose(stored.value, mine.value, rtol=1e-6)  # the store keeps float32
    written = save_figures([Run(writer.path)], tmp_path / "figures", formats=("png",))
    assert [p.name for p in written if "second" in p.name] == ["13-second-order.png"]


def test_extra_passes_leave_the_other_records_alone() -> None:
    plain, _ = _train(3)
    second, _ = _train(3, sharpness_every=1, snr_every=1)
    others = second.frame()
    others = others[~others.kind.isin([R.CURVATURE, R.SNR])].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, plain.frame())


def test_off_by_default_and_bad_options() -> None:
    probe, _ = _train(2)
    assert not probe.frame().kind.isin([R.CURVATURE, R.SNR]).any()
    with pytest.raises(GradprobeError, match="snr_examples: 1"):
        Probe(_model(), options=ProbeOptions(snr_examples=1), snr_every=1)
    with pytest.raises(GradprobeError, match="batch"):
        Probe(_model(), sharpness_every=1).second_order(LOSS, torch.zeros(2, 3))  # type: ignore[arg-type]

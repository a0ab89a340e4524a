"""Every recorded statistic against the same statistic computed independently (NumPy on p.grad copies)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.probe import Probe, ProbeOptions


def np_stats(a: np.ndarray) -> dict[str, float]:
    a = a.astype(np.float64).ravel()
    return {
        R.MEAN: a.mean(),
        R.MEAN_ABS: np.abs(a).mean(),
        R.STD: a.std(ddof=1) if a.size > 1 else 0.0,
        R.NORM: np.sqrt((a * a).sum()),
        R.MAX_ABS: np.abs(a).max(),
        R.ZERO_FRAC: (a == 0).mean(),
        R.NONFINITE: float((~np.isfinite(a)).sum()),
    }


def value(frame, step, layer, tensor, kind, stat):
    sel = frame[(frame.step == step) & (frame.layer == layer) & (frame.tensor == tensor)
                & (frame.kind == kind) & (frame.stat == stat)]
    assert len(sel) == 1, (step, layer, tensor, kind, stat, len(sel))
    return float(sel.value.iloc[0])


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def test_grad_and_weight_stats_match_numpy_on_p_grad():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    with Probe(model, opt, every=1) as probe:
        for step in range(4):
            x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            seen[step] = {n: (p.grad.numpy().copy(), p.detach().numpy().copy()) for n, p in model.named_parameters()}
            opt.step()
    frame = probe.frame()
    for step, params in seen.items():
        for name, (grad, weight) in params.items():
            layer, tensor = name.rsplit(".", 1)
            for stat, expected in np_stats(grad).items():
                got = value(frame, step, layer, tensor, R.GRAD, stat)
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-7), (name, stat)
            wexp = np_stats(weight)
            for stat in (R.MEAN, R.STD, R.NORM):
                got = value(frame, step, layer, tensor, R.WEIGHT, stat)
                assert got == pytest.approx(wexp[stat], rel=1e-5, abs=1e-7)


def test_update_ratio_is_the_step_adam_took():
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before, after, proxy = {}, {}, {}
    with Probe(model, opt, every=1) as probe:
        for step in range(3):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            before[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
            proxy[step] = {n: float(0.05 * p.grad.norm() / p.detach().norm()) for n, p in model.named_parameters()}
            opt.step()
            after[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
    frame = probe.frame()
    for step in range(3):
        for name in before[step]:
            w0, w1 = before[step][name].double(), after[step][name].double()
            expected = float((w1 - w0).norm() / w0.norm())
            layer, tensor = name.rsplit(".", 1)
            got = value(frame, step, layer, tensor, R.WEIGHT, R.UPDATE_RATIO)
            assert got == pytest.approx(expected, rel=1e-4)
            # Adam's step is not lr * g: the recorded ratio is not the naive proxy.
            assert got != pytest.approx(proxy[step][name], rel=0.05)


def test_grads_read_after_clipping_and_accumulation():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, opt, every=1, modules=[]) as probe:
        opt.zero_grad()
        for _ in range(3):  # gradient accumulation over three micro-batches
            model(torch.randn(4, 6)).pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        expected = {n: p.grad.norm().item() for n, p in model.named_parameters()}
        opt.step()
    frame = probe.frame()
    total = np.sqrt(sum(v**2 for v in expected.values()))
    assert total == pytest.approx(0.5, rel=1e-4)  # the clip really happened
    for name, norm in expected.items():
        layer, tensor = name.rsplit(".", 1)
        assert value(frame, 0, layer, tensor, R.GRAD, R.NORM) == pytest.approx(norm, rel=1e-5)
    assert set(frame.kind) == {R.GRAD, R.WEIGHT}  # modules=[] records no activations


def test_cadence_and_param_selection():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, opt, every=3, params="*.weight") as probe:
        for _ in range(10):
            opt.zero_grad()
            model(torch.randn(4, 6)).sum().backward()
            opt.step()
    frame = probe.frame()
    assert sorted(frame.step.unique()) == [0, 3, 6, 9]
    assert set(frame[frame.kind == R.GRAD].tensor) == {"weight"}
    assert probe.step_count == 10


def test_follows_an_optimizer_it_was_not_given_and_manual_step():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    other = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with Probe(model, every=1) as probe:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(4, 6)).sum().backward()
            opt.step()
            other.step()  # holds none of the model's parameters: must not count as a step
    assert probe.step_count == 2
    manual = make_model()
    with Probe(manual, every=1) as probe2:
        for _ in range(3):
            manual.zero_grad()
            manual(torch.randn(4, 6)).sum().backward()
            with torch.no_grad():
                for p in manual.parameters():
                    p -= 0.1 * p.grad
            probe2.step()
    frame = probe2.frame()
    assert sorted(frame[frame.kind == R.GRAD].step.unique()) == [0, 1, 2]
    ratios = frame[(frame.stat == R.UPDATE_RATIO)]
    assert sorted(ratios.step.unique()) == [1, 2]  # between recorded steps


def test_histograms_match_numpy():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, opt, every=5, hist_every=2, options=ProbeOptions(bins=12)) as probe:
        opt.zero_grad()
        model(torch.randn(4, 6)).sum().backward()
        grad = model[0].weight.grad.numpy().copy()
        opt.step()
    hists = probe.hists()
    row = hists[(hists.layer == "0") & (hists.tensor == "weight") & (hists.kind == R.GRAD)].iloc[0]
    edges, counts = row.edges, row.counts
    assert len(edges) == 13 and counts.sum() == grad.size
    assert edges[0] == pytest.approx(grad.min()) and edges[-1] == pytest.approx(grad.max())
    expected, _ = np.histogram(grad, bins=edges)
    assert np.abs(counts - expected).sum() <= 2  # ties exactly on an inner edge may fall either way


def test_nonfinite_counted_with_first_step_and_layer():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Probe(model, opt, every=1, modules=[]) as probe:
        for step in range(3):
            opt.zero_grad()
            model(torch.randn(4, 6)).sum().backward()
            if step == 1:
                model[2].weight.grad[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
            opt.step()
    frame = probe.frame()
    assert value(frame, 1, "2", "weight", R.GRAD, R.NONFINITE) == 3
    assert value(frame, 0, "2", "weight", R.GRAD, R.NONFINITE) == 0
    assert probe.first_nonfinite == {"step": 1, "layer": "2", "tensor": "weight", "kind": R.GRAD}


def test_detach_removes_every_hook_and_model_is_unchanged():
    model = make_model()
    x = torch.randn(5, 6)
    ref = model(x).detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = Probe(model, opt)
    assert torch.equal(model(x), ref)
    assert any(m._forward_hooks for m in model.modules())
    probe.detach()
    probe.detach()
    assert not any(m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    n = len(probe.frame())
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    assert len(probe.frame()) == n

"""Frozen layers (requires_grad False) are listed as ``frozen``, live and stored, and leave the others' verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.data.datasets import load_dataset
from gradprobe.diagnose.engine import diagnose
from gradprobe.probe import Probe
from gradprobe.store.reader import load_run
from gradprobe.store.writer import RunWriter
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer


def _train_frozen(model: nn.Sequential, frozen: int, lr: float,
                  steps: int = 40) -> tuple[Probe, dict[int, list[float]]]:
    """Freeze module ``frozen`` (a Linear), train with a probe; per module, mean |dL/d output| from retained grads."""
    model[frozen].requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(256, model[0].in_features, generator=g)
    y_all = ((x_all[:, 0] * x_all[:, 1] + x_all[:, 2]) > 0).float().unsqueeze(1)
    delta: dict[int, list[float]] = {}
    with Probe(model, opt) as probe:
        for step in range(steps):
            idx = torch.arange(step * 64, (step + 1) * 64) % len(x_all)
            h, outs = x_all[idx], []
            for module in model:
                h = module(h)
                h.retain_grad()
                outs.append(h)
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(h, y_all[idx]).backward()
            for i, out in enumerate(outs):
                delta.setdefault(i, []).append(float(out.grad.abs().mean()))
            opt.step()
    return probe, delta


def _mlp(act: type[nn.Module], depth: int, width: int, std: float | None) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    fan = 8
    for _ in range(depth):
        layers += [nn.Linear(fan, width), act()]
        fan = width
    model = nn.Sequential(*layers, nn.Linear(fan, 1))
    for m in model:
        if isinstance(m, nn.Linear):
            if std is None:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize(("act", "depth", "width", "std", "frozen"),
                         [(nn.ReLU, 6, 32, None, 4), (nn.Sigmoid, 6, 8, 1.0, 6)])
def test_frozen_middle_layer_is_listed_and_the_others_keep_their_verdicts(act, depth, width, std, frozen) -> None:
    model = _mlp(act, depth, width, std)
    probe, delta = _train_frozen(model, frozen, lr=0.05)
    want_frozen = [n for n, p in model.named_parameters() if p.dim() >= 2 and not p.requires_grad]
    assert want_frozen == [f"{frozen}.weight"]
    result = diagnose(probe)
    names = [n for n, p in model.named_parameters() if p.dim() >= 2]
    assert [e.layer for e in result.layers] == names  # every weight matrix, in depth order
    entry = result.layer(f"{frozen}.weight")
    assert entry.verdict == "frozen" and entry.numbers == {} and entry.remedies == []
    assert "requires_grad is False" in entry.evidence
    last_act = len(model) - 2  # the error the output layer sends back enters the last activation
    for name in names[:-1]:
        if name in want_frozen:
            continue
        module = int(name.split(".")[0])
        ratio = float(np.median(np.asarray(delta[module]) / np.asarray(delta[last_act])))
        got = result.layer(name)
        assert got.numbers["error_ratio"] == pytest.approx(ratio, rel=1e-4)
        assert ratio <= 10 and got.verdict == ("vanishing" if ratio < 0.1 else "healthy"), (name, ratio)
    # the sigmoid stack vanishes before its frozen layer and not after: both branches are exercised
    assert any(e.verdict == "vanishing" for e in result.layers) == (act is nn.Sigmoid)
    others = [e.verdict for e in result.layers if e.verdict != "frozen"]
    assert result.verdict == min(others, key=["unstable", "exploding", "vanishing", "dead", "saturated",
                                              "stalled", "healthy"].index)
    assert "frozen" in str(result)


def test_all_healthy_with_a_frozen_layer_stays_healthy() -> None:
    model = _mlp(nn.ReLU, 4, 32, None)
    probe, _ = _train_frozen(model, 2, lr=0.01)
    result = diagnose(probe)
    assert [e.verdict for e in result.layers] == ["healthy", "frozen", "healthy", "healthy", "healthy"]
    assert result.verdict == "healthy"


def test_stored_run_lists_its_frozen_layers(tmp_path) -> None:
    cfg = load_experiment("circles-deep", ["train.epochs=3", "model.activation=relu",
                                           "model.init=he_normal"], seeds=1).runs[0]
    with RunWriter(tmp_path, "frozen-run", config=cfg.model_dump(mode="json"), env={},
                   meta={"experiment": cfg.experiment, "arm": cfg.arm, "seed": cfg.seed}) as writer:
        trainer = Trainer(cfg, load_dataset(cfg.data), writer)
        trainer.model.get_submodule("layers.4").requires_grad_(False)  # the third of five weight matrices
        want = [n for n, p in trainer.model.named_parameters() if p.dim() >= 2 and not p.requires_grad]
        result = trainer.run()
    assert want == ["layers.4.weight"] and result.summary["frozen_layers"] == want
    run = load_run("frozen-run", tmp_path)
    assert run.summary["frozen_layers"] == want
    diagnosis = diagnose(run)
    assert [e.layer for e in diagnosis.layers] == run.summary["weight_layers"]
    assert [e.verdict == "frozen" for e in diagnosis.layers] == [n in want for n in run.summary["weight_layers"]]
    assert diagnosis.verdict != "frozen"

"""Residual streams, normalisation layers and tied weights: standard nets are healthy, broken ones are caught.

Every verdict is backed by the test's own measurement: the loss, mean |dL/dz| read from retained
module outputs, or gradient norms from p.grad.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from residual_models import GPT, ResMLP, ResNet, image_batches, lm_loss, mlp_batches, sequence_batches, train
from torch import nn

from gradprobe.diagnose.engine import diagnose
from gradprobe.structure import model_structure


def _falls(losses: list[float], factor: float) -> bool:
    """Whether the mean loss of the last 10 steps is below ``factor`` times that of the first 10."""
    return float(np.mean(losses[-10:])) < factor * float(np.mean(losses[:10]))


def test_structure_finds_joins_whose_exit_error_is_the_stream_error() -> None:
    torch.manual_seed(0)
    model, x = ResMLP(), torch.randn(16, 8)
    s = model_structure(model, x)
    assert [j["exit"] for j in s["joins"]] == [f"blocks.{k}.fc2" for k in range(8)]
    assert s["joins"][0]["branch"] == ["blocks.0.norm", "blocks.0.fc1", "blocks.0.act", "blocks.0.fc2"]
    assert s["entry"] == ["stem"] and s["output"] == "head" and s["tied"] == {}
    assert set(s["norms"]) == {f"blocks.{k}.norm" for k in range(8)} | {"norm"}
    # The claim the stream rule rests on: the exit's output error is the error of the block's sum.
    outs: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: object, out: torch.Tensor) -> None:
        out.retain_grad()
        outs[next(n for n, m in model.named_modules() if m is module)] = out

    for name in ("blocks.3", "blocks.3.fc2"):
        dict(model.named_modules())[name].register_forward_hook(keep)
    model(x).sum().backward()
    assert torch.equal(outs["blocks.3"].grad, outs["blocks.3.fc2"].grad)


def test_structure_of_gpt_has_tied_head_and_pre_norms() -> None:
    torch.manual_seed(0)
    s = model_structure(GPT(), torch.randint(0, 16, (2, 16)))
    assert s["tied"] == {"wte.weight": ["lm_head", "wte"]} and s["output"] == "lm_head"
    assert [j["exit"] for j in s["joins"]][:2] == ["h.0.attn.c_proj", "h.0.c_proj"] and len(s["joins"]) == 8
    assert {"h.0.ln1", "h.3.ln2", "ln_f"} <= set(s["norms"]) and "h.0.gelu" not in s["norms"]
    assert s["entry"] == ["wte"]  # wpe's output (T, d) is broadcast over the batch: its error is a sum


def test_layernorm_residual_mlp_is_healthy() -> None:
    torch.manual_seed(0)
    model = ResMLP()
    probe, structure, seen = train(model, torch.optim.Adam(model.parameters(), 1e-3), mlp_batches(),
                                   F.binary_cross_entropy_with_logits, 100, ("blocks.0.fc2", "blocks.7.fc2"))
    assert _falls(seen.losses, 0.3)
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "healthy" and len(result.layers) == 18
    first = result.layer("blocks.0.fc1.weight")
    assert first.numbers["stream_ratio"] == pytest.approx(seen.ratio("blocks.0.fc2", "blocks.7.fc2"), rel=1e-4)
    assert 1 < first.numbers["stream_ratio"] < 10  # the stream's error grows, as a sum over paths does


def test_batchnorm_resnet_is_healthy() -> None:
    torch.manual_seed(0)
    model = ResNet()
    probe, structure, seen = train(model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), image_batches(),
                                   F.cross_entropy, 60, ("relu", "blocks.5.bn2", "pool"))
    assert _falls(seen.losses, 0.5)
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "healthy" and len(result.layers) == 14
    stem = result.layer("stem.weight").numbers
    assert stem["stream_ratio"] == pytest.approx(seen.ratio("relu", "blocks.5.bn2"), rel=1e-4)
    assert stem["stream_gain_per_join"] == pytest.approx(seen.ratio("relu", "blocks.5.bn2") ** (1 / 6), rel=1e-4)
    # What the plain rule misread as vanishing: the average pool spreads the error over 8x8 positions,
    # so the per-position error of every block is a small fraction of the pooled error the head sends back.
    assert seen.ratio("blocks.5.bn2", "pool") < 0.1
    assert diagnose(probe.frame()).verdict == "vanishing"  # a bare frame carries no structure


def test_gpt_with_tied_embeddings_is_healthy() -> None:
    torch.manual_seed(0)
    model = GPT()
    probe, structure, seen = train(model, torch.optim.AdamW(model.parameters(), 3e-4), sequence_batches(), lm_loss,
                                   60, ("h.0.attn.c_proj", "h.3.c_proj"))
    assert _falls(seen.losses, 0.98)
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "healthy"
    assert result.layers[-1].layer == "wte.weight" and "tied, used by lm_head, wte" in result.layers[-1].evidence
    ratio = result.layer("h.0.attn.c_attn.weight").numbers["stream_ratio"]
    assert ratio == pytest.approx(seen.ratio("h.0.attn.c_proj", "h.3.c_proj"), rel=1e-4)
    assert 0.5 < ratio < 2  # a pre-norm stream carries the error back nearly unchanged


def test_unnormalised_residual_mlp_with_large_init_is_exploding() -> None:
    torch.manual_seed(0)
    model = ResMLP(norm=False)
    for p in model.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, 0.0, 1.0)
    watch = ("blocks.0.fc2", "blocks.1.fc2", "blocks.7.fc2")
    probe, structure, seen = train(model, torch.optim.Adam(model.parameters(), 1e-3), mlp_batches(),
                                   F.binary_cross_entropy_with_logits, 30, watch)
    assert min(seen.losses) > 1e3  # the forward pass already blew up
    assert seen.ratio("blocks.0.fc2", "blocks.1.fc2") > 5  # every join multiplies the error
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "exploding"
    first = result.layer("blocks.0.fc1.weight")
    assert first.verdict == "exploding"
    assert first.numbers["stream_ratio"] == pytest.approx(seen.ratio("blocks.0.fc2", "blocks.7.fc2"), rel=1e-4)
    assert first.numbers["stream_gain_per_join"] > 3


def test_post_norm_transformer_at_high_learning_rate_without_warmup_is_vanishing() -> None:
    torch.manual_seed(0)
    model = GPT(pre=False)
    probe, structure, seen = train(model, torch.optim.AdamW(model.parameters(), 3e-2), sequence_batches(), lm_loss,
                                   60, ("h.1.c_proj", "h.3.c_proj"))
    assert not _falls(seen.losses, 0.98)  # it does not learn
    # What happens: the post-norms divide the error by the grown stream's scale at every join, so the
    # lower blocks get almost no gradient (p.grad norms), while the top block still does.
    low = np.median(seen.grad_norm["h.1.c_fc.weight"]) / np.median(seen.grad_norm["h.3.c_fc.weight"])
    assert low < 0.01
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "vanishing"
    layer = result.layer("h.1.c_fc.weight")
    assert layer.verdict == "vanishing"
    assert layer.numbers["stream_ratio"] == pytest.approx(seen.ratio("h.1.c_proj", "h.3.c_proj"), rel=1e-4)


def test_resnet_with_dead_relus_is_dead() -> None:
    torch.manual_seed(0)
    model = ResNet()
    with torch.no_grad():
        for block in model.blocks:
            block.bn1.bias.fill_(-5.0)  # every unit after bn1 starts far below zero
    probe, structure, seen = train(model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), image_batches(),
                                   F.cross_entropy, 30, ("blocks.2.relu1",))
    dead = float(np.median(seen.dead["blocks.2.relu1"][-6:]))  # the state rules' window: the last 6 of 30 steps
    assert dead > 0.9
    result = diagnose(probe)  # the structure the probe read from the first training pass
    assert result.verdict == "dead"
    assert result.layer("blocks.2.conv1.weight").verdict == "dead"
    assert result.layer("blocks.2.conv1.weight").numbers["dead_frac"] == pytest.approx(dead, rel=1e-6)

"""Standard architectures for the residual-aware flow tests, and a training loop that measures them independently."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradprobe.probe import Probe
from gradprobe.structure import model_structure


class Block(nn.Module):
    def __init__(self, d: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.fc1, self.act, self.fc2 = nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d)
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    """Stem, 8 pre-norm residual blocks of width 32, head: 18 weight matrices."""

    def __init__(self, norm: bool = True, blocks: int = 8, d: int = 32) -> None:
        super().__init__()
        self.stem = nn.Linear(8, d)
        self.blocks = nn.Sequential(*[Block(d, norm) for _ in range(blocks)])
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 8) -> (B, 1)
        return self.head(self.norm(self.blocks(self.stem(x))))


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c, H, W)
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Stem conv-BN-ReLU, 6 basic blocks, global average pool, linear head: 14 weight tensors."""

    def __init__(self, c: int = 16, blocks: int = 6) -> None:
        super().__init__()
        self.stem, self.bn, self.relu = nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        self.blocks = nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, 3)
        return self.fc(self.pool(self.blocks(self.relu(self.bn(self.stem(x))))).flatten(1))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.c_attn, self.c_proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.c_attn(x).split(d, dim=2))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class TBlock(nn.Module):
    def __init__(self, d: int, heads: int, pre: bool) -> None:
        super().__init__()
        self.pre = pre
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), Attention(d, heads), nn.LayerNorm(d)
        self.c_fc, self.gelu, self.c_proj = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        if self.pre:
            x = x + self.attn(self.ln1(x))
            return x + self.c_proj(self.gelu(self.c_fc(self.ln2(x))))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.c_proj(self.gelu(self.c_fc(x))))


class GPT(nn.Module):
    """GPT-2 style: token + position embeddings, 4 blocks, tied head, N(0, 0.02) init, c_proj 0.02/sqrt(2L)."""

    def __init__(self, pre: bool = True, vocab: int = 16, t: int = 16, d: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t, d)
        self.h = nn.ModuleList([TBlock(d, 4, pre) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d) if pre else nn.Identity()
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers) if name.endswith("c_proj.weight") else 0.02)
            elif name.endswith("bias") and ".ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


Batch = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def mlp_batches(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = ((x[:, 0] * x[:, 1] + x[:, 2]) > 0).float().unsqueeze(1)
    return lambda s: (x[s * 64 % 256:][:64], y[s * 64 % 256:][:64])


def image_batches(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + (x[:, 0].mean((1, 2)) > 0.1).long()
    return lambda s: (x[s * 32 % 128:][:32], y[s * 32 % 128:][:32])


def sequence_batches(seed: int = 0, vocab: int = 16, t: int = 16) -> Batch:
    """Fibonacci sequences mod ``vocab`` from random starts: next-token targets."""
    g = torch.Generator().manual_seed(seed)

    def batch(_: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = list(torch.randint(0, vocab, (32, 2), generator=g).T)
        while len(seq) < t + 1:
            seq.append((seq[-1] + seq[-2]) % vocab)
        tokens = torch.stack(seq, 1)  # (32, t + 1)
        return tokens[:, :t], tokens[:, 1:]

    return batch


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@dataclass
class Seen:
    """What the test measured itself, per step: mean |dL/d output| of watched modules, |p.grad| and losses."""

    losses: list[float] = field(default_factory=list)
    delta: dict[str, list[float]] = field(default_factory=dict)
    grad_norm: dict[str, list[float]] = field(default_factory=dict)  # per parameter
    dead: dict[str, list[float]] = field(default_factory=dict)  # units <= 0 for every example

    def ratio(self, num: str, den: str) -> float:
        """Median over steps of delta[num] / delta[den], as the flow rules take it."""
        return float(np.median(np.asarray(self.delta[num]) / np.asarray(self.delta[den])))


def train(model: nn.Module, opt: torch.optim.Optimizer, batches: Batch, loss_fn: Callable[..., torch.Tensor],
          steps: int, watch: tuple[str, ...] = ()) -> tuple[Probe, dict[str, object], Seen]:
    """Train with a probe attached; our own hooks retain the outputs of ``watch`` for the oracle."""
    structure = model_structure(model, batches(0)[0])
    seen, outs = Seen(), {}
    modules = dict(model.named_modules())

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.retain_grad()
                outs[name] = out
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in watch]
    with Probe(model, opt) as probe:
        for step in range(steps):
            x, y = batches(step)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            seen.losses.append(float(loss.detach()))
            for name, out in outs.items():
                seen.delta.setdefault(name, []).append(float(out.grad.abs().mean()))
                flat = out.detach().reshape(out.shape[0], -1)
                seen.dead.setdefault(name, []).append(float((flat.amax(dim=0) <= 0).float().mean()))
            for name, p in model.named_parameters():
                seen.grad_norm.setdefault(name, []).append(float(p.grad.norm()))
            opt.step()
    for h in handles:
        h.remove()
    # The probe reads the wiring from the live first pass; model_structure from a copy: they must agree.
    assert probe.structure == structure
    return probe, structure, seen

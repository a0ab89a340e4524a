"""Designs for the probe's per-step statistics, timed as whole runs on an MLP, a Transformer encoder and a CNN.

Every design computes the probe's default raw reductions for all gradients, all weights, every leaf
module's output (activation) and its gradient (delta), and buffers them on the device with one
host transfer every 64 steps, so only how the reductions are computed differs:

(a) per tensor, today's reductions (sum, |x|, sum|x|, centred norm, max|x|, count, finiteness check);
(b) per tensor, fewest ops: sum, centred norm, |x| -> sum and max, ``count_nonzero``; the scalars stacked once
    per group and one finiteness check per group (``var_mean`` and ``vector_norm`` ord 1/inf were measured
    3-30x slower than these on CPU: they are not vectorised);
(c) as (b), but same-shape tensors stacked and reduced together (one op per stat per shape group);
(d) ``torch.compile`` (fullgraph) of the reductions of all four groups at the step (compile timed apart);
(e) as (b), but activations and deltas are kept (references) and reduced at the step in one batched call.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def mlp() -> tuple[nn.Module, Batch]:
    """784 -> 6 x 256 -> 10 with ReLU, batch 128."""
    layers: list[nn.Module] = []
    width = 784
    for _ in range(6):
        layers += [nn.Linear(width, 256), nn.ReLU()]
        width = 256
    return nn.Sequential(*layers, nn.Linear(width, 10)), (torch.rand(128, 784), torch.randint(0, 10, (128,)))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(1))  # (B, T, d) -> (B, 10)


def transformer() -> tuple[nn.Module, Batch]:
    """2 encoder layers, d 128, 4 heads, feed-forward 256; batch 32 x sequence 64."""
    return _Encoder(), (torch.randn(32, 64, 128), torch.randint(0, 10, (32,)))


def cnn() -> tuple[nn.Module, Batch]:
    """3 conv layers (3 -> 32 -> 64 -> 64) on 32 x 32 images, batch 32."""
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 10))
    return net, (torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)))


MODELS: dict[str, Callable[[], tuple[nn.Module, Batch]]] = {"mlp": mlp, "transformer": transformer, "cnn": cnn}


# -- (a) today's per-tensor reductions ---------------------------------------------------------------
def _today(x: torch.Tensor, full: bool) -> torch.Tensor:
    total = x.sum()
    ax = x.abs()
    parts = [total, ax.sum(), torch.linalg.vector_norm((x - total / x.numel()).reshape(-1))]
    if full:
        parts += [ax.amax(), torch.count_nonzero(x).to(x.dtype)]
    raw = torch.stack(parts)
    bool(torch.isfinite(raw).all())
    return raw


# -- (b) fewest ops per tensor ----------------------------------------------------------------------
def _lean(xs: list[torch.Tensor], full: bool) -> torch.Tensor:
    scalars: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []
    for x in xs:
        total = x.sum()
        scalars += [total, torch.linalg.vector_norm(x - total / x.numel())]
        if full:
            ax = x.abs()
            scalars += [ax.sum(), ax.amax()]
            counts.append(torch.count_nonzero(x))
    raw = torch.stack(scalars).view(len(xs), -1)
    if counts:
        raw = torch.cat([raw, torch.stack(counts).to(raw.dtype)[:, None]], 1)
    math.isfinite(raw.sum().item())
    return raw


# -- (c) same-shape tensors stacked -----------------------------------------------------------------
def _grouped(xs: list[torch.Tensor], full: bool) -> torch.Tensor:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(tuple(x.shape), []).append(i)
    rows: list[torch.Tensor] = []
    for idx in groups.values():
        if len(idx) == 1:
            rows.append(_lean([xs[idx[0]]], full))
            continue
        s = torch.stack([xs[i] for i in idx]).flatten(1)  # (G, n)
        total = s.sum(1)
        cols = [total, torch.linalg.vector_norm(s - (total / s.shape[1])[:, None], dim=1)]
        if full:
            ax = s.abs()
            cols += [ax.sum(1), ax.amax(1), torch.count_nonzero(s, 1).to(s.dtype)]
        rows.append(torch.stack(cols, 1))
    raw = torch.cat(rows)
    math.isfinite(raw.sum().item())
    return raw


def _dead(out: torch.Tensor) -> torch.Tensor:
    return (out <= 0).reshape(out.shape[0], -1).all(0).sum()


class _Recorder:
    """Hooks of one design: forward (activation), tensor (delta) and optimizer pre-step hooks."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, design: str,
                 compiled: Callable[..., Any] | None) -> None:
        self.design, self.compiled, self.params = design, compiled, [p for p in model.parameters()]
        self.acts: list[torch.Tensor] = []
        self.deltas: list[torch.Tensor] = []
        self.buffer: list[torch.Tensor] = []
        self.steps = 0
        self.handles = [m.register_forward_hook(self._forward) for m in model.modules() if not list(m.children())]
        self.handles.append(opt.register_step_pre_hook(lambda o, a, k: self._step()))

    def _forward(self, module: nn.Module, inputs: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return
        relu = isinstance(module, nn.ReLU)
        if self.design in ("d", "e"):
            self.acts.append(out.detach())
            if relu:
                self.buffer.append(_dead(out))
        else:
            self.buffer.append(_today(out.detach(), False) if self.design == "a" else _lean([out.detach()], False))
            if relu:
                self.buffer.append(_dead(out))
        out.register_hook(self._delta)

    def _delta(self, g: torch.Tensor) -> None:
        if self.design in ("d", "e"):
            self.deltas.append(g)
        elif self.design == "a":
            self.buffer.append(_today(g, False))
        else:
            self.buffer.append(_lean([g], False))

    def _step(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        weights = [p.detach() for p in self.params]
        if self.design == "a":
            self.buffer += [_today(g, True) for g in grads] + [_today(w, False) for w in weights]
        elif self.design in ("b", "e"):
            self.buffer += [_lean(grads, True), _lean(weights, False)]
            if self.design == "e":
                self.buffer += [_lean(self.acts, False), _lean(self.deltas, True)]
        elif self.design == "c":
            self.buffer += [_grouped(grads, True), _grouped(weights, False)]
        else:  # d
            self.buffer += list(self.compiled(grads, weights, self.acts, self.deltas))  # type: ignore[misc]
        self.acts, self.deltas = [], []
        self.steps += 1
        if self.steps % 64 == 0:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            torch.cat([b.reshape(-1).double() for b in self.buffer]).numpy()
        self.buffer = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.flush()


def _compiled_fn() -> Callable[..., Any]:
    def reduce_all(grads: list[torch.Tensor], weights: list[torch.Tensor], acts: list[torch.Tensor],
                   deltas: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for xs, full in ((grads, True), (weights, False), (acts, False), (deltas, True)):
            rows = []
            for x in xs:
                total = x.sum()
                cols = [total, torch.linalg.vector_norm(x - total / x.numel())]
                if full:
                    cols += [x.abs().sum(), x.abs().amax(), (x != 0).sum().to(x.dtype)]
                rows.append(torch.stack(cols))
            out.append(torch.stack(rows))
        return out

    return torch.compile(reduce_all, fullgraph=True, dynamic=False)


def _run(name: str, design: str, steps: int, compiled: Callable[..., Any] | None) -> float:
    """Mean seconds per step of one whole run (attach, steps, flushes, detach)."""
    torch.manual_seed(0)
    model, (x, y) = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        float(loss.detach())

    for _ in range(3):
        step()
    start = time.perf_counter()
    rec = None if design == "none" else _Recorder(model, opt, design, compiled)
    for _ in range(steps):
        step()
    if rec is not None:
        rec.remove()
    return (time.perf_counter() - start) / steps


def _compile_times(name: str) -> tuple[Callable[..., Any], float, float]:
    """The compiled design for ``name`` and its first-call time, cold (empty cache) and warm (on-disk cache)."""
    torch.manual_seed(0)
    model, (x, y) = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    fn: Callable[..., Any] | None = None
    for _ in range(2):  # first cold (fresh cache dir), then warm after a dynamo reset
        torch._dynamo.reset()
        fn = _compiled_fn()
        rec = _Recorder(model, opt, "d", fn)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
        rec.remove()
    assert fn is not None
    return fn, times[0], times[1]


DESIGNS = ("none", "a", "b", "c", "d", "e")


def run(reps: int = 3, steps: int = 200, threads: tuple[int, ...] = (1, 2),
        models: tuple[str, ...] = ("mlp", "cnn", "transformer")) -> dict[str, Any]:
    """Per model and thread count: median (and range) over interleaved reps of whole-run mean step time."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="gp-inductor-"))
    out: dict[str, Any] = {"reps": reps, "steps": steps, "rows": []}
    before = torch.get_num_threads()
    for t in threads:
        torch.set_num_threads(t)
        for name in models:
            fn, cold, warm = _compile_times(name)
            samples: dict[str, list[float]] = {d: [] for d in DESIGNS}
            for _ in range(reps):
                for d in DESIGNS:
                    samples[d].append(_run(name, d, steps, fn if d == "d" else None))
            out["rows"].append({"model": name, "threads": t, "samples": samples, "compile_cold_s": cold,
                                "compile_warm_s": warm})
            print(name, t, {d: f"{np.median(s) * 1e3:.2f}" for d, s in samples.items()}, f"{cold:.1f}/{warm:.1f}",
                  flush=True)  # a script's progress
    torch.set_num_threads(before)
    return out


def markdown(res: dict[str, Any]) -> str:
    """The results as a markdown table: ms/step median [min, max] and overhead over no probe."""
    lines = ["| model | threads | design | ms/step median [min, max] | overhead | d: compile cold / warm s |",
             "|---|---|---|---|---|---|"]
    for row in res["rows"]:
        base = float(np.median(row["samples"]["none"]))
        for d, s in row["samples"].items():
            med = float(np.median(s))
            comp = f"{row['compile_cold_s']:.1f} / {row['compile_warm_s']:.1f}" if d == "d" else ""
            lines.append(f"| {row['model']} | {row['threads']} | {d} | {med * 1e3:.2f} [{min(s) * 1e3:.2f}, "
                         f"{max(s) * 1e3:.2f}] | {med / base - 1:+.1%} | {comp} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    result = run(reps=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    here = Path(__file__).resolve().parent
    (here / "probe_designs.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))

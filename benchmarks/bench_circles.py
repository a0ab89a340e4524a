"""(2) circles-deep, 3 activations x 10 seeds, 100 epochs: ensemble engine vs a plain one-model PyTorch loop."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gradprobe.data.datasets import Dataset, load_dataset
from gradprobe.store.layout import RUNS_DIR
from gradprobe.train import setup
from gradprobe.train.config import RunConfig
from gradprobe.train.ensemble import train_group
from gradprobe.train.experiment import load_experiment


def plain_loop(cfg: RunConfig, data: Dataset) -> float:
    """The straightforward loop: same init, data order and optimizer, no probe; returns train accuracy."""
    model = setup.build_model(cfg, data, "bce")
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.optimizer.lr, alpha=cfg.optimizer.alpha,
                              eps=cfg.optimizer.eps)
    x, y = data.x_train, data.y_train.float()
    n, batch = len(y), cfg.train.batch_size or len(y)
    for epoch in range(cfg.train.epochs or 0):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        for b in range(math.ceil(n / batch)):
            idx = order[b * batch:(b + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]).squeeze(-1), y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((model(x).squeeze(-1) > 0).float() == y).float().mean())


def _store_bytes(store: Path) -> tuple[int, int]:
    stats = sum(f.stat().st_size for f in (store / RUNS_DIR).rglob("stats-*.parquet"))
    total = sum(f.stat().st_size for f in (store / RUNS_DIR).rglob("*") if f.is_file())
    return stats, total


def run(reps: int, epochs: int = 100, seeds: int = 10) -> dict[str, object]:
    """Interleaved repetitions of both engines; median seconds, speed-up and accuracy per arm."""
    exp = load_experiment("circles-deep", [f"train.epochs={epochs}"], seeds=seeds)
    data = load_dataset(exp.runs[0].data)
    times: dict[str, list[float]] = {"gradprobe ensemble (probe on, store)": [], "plain PyTorch loop": []}
    acc: dict[str, dict[str, list[float]]] = {}
    store_info: dict[str, float] = {}
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = train_group(exp.runs, data, Path(tmp))
            times["gradprobe ensemble (probe on, store)"].append(time.perf_counter() - start)
            stats_bytes, total = _store_bytes(Path(tmp))
            rows = sum(len(r.frame) for r in results)
            store_info = {"stat_rows": rows, "stats_bytes": stats_bytes, "bytes_per_value": stats_bytes / rows,
                          "run_dir_bytes_total": total}
        start = time.perf_counter()
        plain = [plain_loop(cfg, data) for cfg in exp.runs]
        times["plain PyTorch loop"].append(time.perf_counter() - start)
        acc = {"gradprobe": _by_arm(exp.runs, [r.summary["train_accuracy"] for r in results]),
               "plain loop": _by_arm(exp.runs, plain)}
    med = {k: float(np.median(v)) for k, v in times.items()}
    summary = {eng: {arm: (float(np.mean(v)), float(np.std(v))) for arm, v in arms.items()} for eng, arms in acc.items()}
    return {"reps": reps, "epochs": epochs, "models": len(exp.runs), "seconds": med, "all_seconds": times,
            "speedup": med["plain PyTorch loop"] / med["gradprobe ensemble (probe on, store)"],
            "accuracy_mean_std": summary, "store": store_info}


def _by_arm(runs: list[RunConfig], values: list[float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for cfg, v in zip(runs, values):
        out.setdefault(cfg.arm, []).append(v)
    return out

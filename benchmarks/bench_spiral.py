"""(3) The spiral experiment: gradprobe's ensemble engine vs a hand-written NumPy (CS231n-style) loop."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from gradprobe.data.datasets import load_dataset
from gradprobe.train.ensemble import train_group
from gradprobe.train.experiment import load_experiment


def numpy_spiral(x: np.ndarray, y: np.ndarray, activation: str, iterations: int, seed: int) -> tuple[float, np.ndarray]:
    """CS231n's 2-layer-hidden net, full batch GD step 0.1, L2 1e-3, float64, sum|dW|/sum(shape) per iteration."""
    rng = np.random.default_rng(seed)
    h, k, d = 50, int(y.max()) + 1, x.shape[1]
    w1, b1 = 0.1 * rng.standard_normal((d, h)), np.zeros((1, h))
    w2, b2 = 0.1 * rng.standard_normal((h, h)), np.zeros((1, h))
    w3, b3 = 0.1 * rng.standard_normal((h, k)), np.zeros((1, k))
    step, reg, n = 0.1, 1e-3, x.shape[0]
    act = (lambda z: np.maximum(0, z)) if activation == "relu" else (lambda z: 1 / (1 + np.exp(-z)))
    magnitudes = np.zeros((iterations, 3))
    for i in range(iterations):
        h1 = act(x @ w1 + b1)
        h2 = act(h1 @ w2 + b2)
        scores = h2 @ w3 + b3
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        dscores = probs.copy()
        dscores[np.arange(n), y] -= 1
        dscores /= n
        dw3, db3 = h2.T @ dscores + reg * w3, dscores.sum(0, keepdims=True)
        dh2 = dscores @ w3.T
        dh2 = dh2 * (h2 > 0) if activation == "relu" else dh2 * h2 * (1 - h2)
        dw2, db2 = h1.T @ dh2 + reg * w2, dh2.sum(0, keepdims=True)
        dh1 = dh2 @ w2.T
        dh1 = dh1 * (h1 > 0) if activation == "relu" else dh1 * h1 * (1 - h1)
        dw1, db1 = x.T @ dh1 + reg * w1, dh1.sum(0, keepdims=True)
        magnitudes[i] = [np.abs(g).sum() / sum(g.shape) for g in (dw1, dw2, dw3)]
        w1 -= step * dw1
        b1 -= step * db1
        w2 -= step * dw2
        b2 -= step * db2
        w3 -= step * dw3
        b3 -= step * db3
    correct = (np.argmax(act(act(x @ w1 + b1) @ w2 + b2) @ w3 + b3, axis=1) == y).mean()
    return float(correct), magnitudes


def run(reps: int, iterations: int = 50_000) -> dict[str, object]:
    """Median seconds of both arms per engine, interleaved; plus final train accuracies."""
    exp = load_experiment("spiral", [f"train.iterations={iterations}"], seeds=1)
    data = load_dataset(exp.runs[0].data)
    x, y = data.x_train.double().numpy(), data.y_train.numpy()
    times: dict[str, list[float]] = {"gradprobe": [], "numpy": []}
    acc: dict[str, list[float]] = {"gradprobe": [], "numpy": []}
    store_info: dict[str, float] = {}
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as store:
            start = time.perf_counter()
            results = train_group(exp.runs, data, Path(store))
            times["gradprobe"].append(time.perf_counter() - start)
            stats_bytes = sum(f.stat().st_size for f in Path(store).rglob("stats-*.parquet"))
            store_info = {"stat_rows": sum(len(r.frame) for r in results), "stats_bytes": stats_bytes}
            store_info["bytes_per_value"] = stats_bytes / store_info["stat_rows"]
        acc["gradprobe"] = [r.summary["train_accuracy"] for r in results]
        start = time.perf_counter()
        acc["numpy"] = [numpy_spiral(x, y, arm.model.activation, iterations, 0)[0] for arm in exp.runs]
        times["numpy"].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"iterations": iterations, "reps": reps, "seconds": med, "all_seconds": times,
            "speedup": med["numpy"] / med["gradprobe"], "train_accuracy": acc,
            "arms": [r.arm for r in exp.runs], "store": store_info}

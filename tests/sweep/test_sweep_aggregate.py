"""Pooling over seeds against an independent computation: NumPy moments and scipy's t.interval."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradprobe.sweep.aggregate import METRICS, aggregate, interval


def _oracle(values: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width via scipy.stats.t.interval around NumPy's mean and standard error."""
    arr = np.array([v for v in values if np.isfinite(v)])
    mean = arr.mean()
    if arr.std() == 0:  # scipy needs scale > 0; a constant sample has a zero-width interval
        return mean, 0.0
    lo, hi = stats.t.interval(0.95, len(arr) - 1, loc=mean, scale=arr.std(ddof=1) / np.sqrt(len(arr)))
    return mean, (hi - lo) / 2


@pytest.mark.parametrize("values", [
    [0.1, 0.2, 0.4],
    [1.0, 1.0, 1.0, 1.0],
    [3.5, -2.0, 7.25, 0.5, 1e-3, 12.0],
    [0.5, math.nan, 0.7, math.inf, 0.9, -math.inf],
])
def test_interval_matches_scipy_t_interval(values: list[float]) -> None:
    n, mean, half, bad = interval(values)
    want_mean, want_half = _oracle(values)
    assert n == sum(np.isfinite(values)) and bad == len(values) - n
    assert mean == pytest.approx(want_mean, rel=1e-12)
    assert half == pytest.approx(want_half, rel=1e-12, abs=1e-15)


def test_interval_degenerate_cases() -> None:
    assert interval([2.0])[:3] == (1, 2.0, pytest.approx(math.nan, nan_ok=True))
    n, mean, half, bad = interval([math.nan, math.inf])
    assert (n, bad) == (0, 2) and math.isnan(mean) and math.isnan(half)
    assert interval([])[0] == 0


VERDICTS = ("healthy", "dead", "healthy", "exploding", "undiagnosed")


def _runs(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for arm in ("sigmoid", "relu"):
        for depth in (2, 4):
            for seed in range(5):
                factor = float(rng.lognormal(2.0 if arm == "sigmoid" else 0.0, 1.0))
                rows.append({"run_id": f"{arm}{depth}{seed}", "arm": arm, "point": f"depth={depth}", "seed": seed,
                             "status": "diverged" if (arm, depth, seed) == ("relu", 4, 3) else "finished",
                             "verdict": VERDICTS[(seed * 7 + depth + len(arm)) % len(VERDICTS)],
                             "model.depth": depth, "model.activation": arm, "model.init": "normal:1",
                             "depth": depth, "final_loss": float(rng.normal(0.5, 0.1)),
                             "train_accuracy": float(rng.uniform()), "test_accuracy": math.nan,
                             "vanishing_factor": factor, "vanishing_factor_median": factor * 2,
                             "log10_vanishing_factor": math.log10(factor)})
    frame = pd.DataFrame(rows)
    frame.loc[frame.status == "diverged", ["final_loss", "vanishing_factor"]] = [math.nan, math.inf]
    return frame


def test_aggregate_against_pandas_groupby() -> None:
    runs = _runs(np.random.default_rng(0))
    agg = aggregate(runs)
    assert list(agg["point"]) == ["depth=2", "depth=4"] * 2 and list(agg["arm"]) == ["sigmoid"] * 2 + ["relu"] * 2
    assert list(agg["n_runs"]) == [5] * 4 and list(agg["n_diverged"]) == [0, 0, 0, 1]
    for _, row in agg.iterrows():
        grp = runs[(runs.arm == row["arm"]) & (runs.point == row["point"])]
        counts = grp["verdict"].value_counts()  # pandas' own count, parsed back from the text
        assert dict((v, int(n)) for v, n in (part.rsplit(" ", 1) for part in row["verdicts"].split(", "))) == dict(
            counts)
        for name in METRICS:
            vals = grp[name].to_numpy()
            finite = vals[np.isfinite(vals)]
            assert row[f"{name}_n"] == len(finite) and row[f"{name}_nonfinite"] == len(vals) - len(finite)
            if len(finite) >= 2:
                mean, half = _oracle(list(vals))
                assert row[f"{name}_mean"] == pytest.approx(mean, rel=1e-12)
                assert row[f"{name}_ci"] == pytest.approx(half, rel=1e-12)
            else:
                assert math.isnan(row[f"{name}_ci"])
    diverged = agg.iloc[3]
    assert diverged["final_loss_n"] == 4 and diverged["vanishing_factor_nonfinite"] == 1
    assert diverged["test_accuracy_nonfinite"] == 5 and math.isnan(diverged["test_accuracy_mean"])

"""Finite tensors never give non-finite statistics (issue 10, item 11), and non-finite counts are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradprobe import records as R
from gradprobe.quantities.tensor_stats import finalize_moments, merge_moments, moments_for, tensor_moments, tensor_stats

STATS = (R.MEAN, R.MEAN_ABS, R.STD, R.NORM, R.MAX_ABS, R.NONFINITE)


def np_stats(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).ravel()
    return np.array([a.mean(), np.abs(a).mean(), a.std(ddof=1), np.sqrt((a * a).sum()), np.abs(a).max(),
                     float((~np.isfinite(a)).sum())])


@pytest.mark.parametrize("magnitude", [1.0, 1e20, 1e30, 3e38])
def test_huge_finite_float32_gets_float64_numpy_stats(magnitude: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 33, generator=g) * 2 - 1) * magnitude  # float32, finite
    assert bool(torch.isfinite(x).all())
    got = tensor_stats(x, STATS)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, np_stats(x.numpy()), rtol=1e-5)


def test_transposed_huge_view_is_handled() -> None:
    x = (torch.randn(40, 30) * 1e30).t()  # a non-contiguous view, as Linear weight gradients are
    np.testing.assert_allclose(tensor_stats(x, STATS), np_stats(x.numpy()), rtol=1e-5)


@pytest.mark.parametrize("bad", [[float("inf")], [float("nan"), -float("inf")], [float("inf")] * 5])
def test_nonfinite_count_is_exact(bad: list[float]) -> None:
    x = torch.randn(100) * 1e30
    x[: len(bad)] = torch.tensor(bad)
    assert tensor_stats(x, (R.NONFINITE,))[0] == len(bad)
    assert tensor_stats(x, STATS)[-1] == len(bad)


def test_merged_moments_equal_stats_of_concatenation() -> None:
    g = torch.Generator().manual_seed(1)
    parts = [torch.randn(n, 7, generator=g) * s + m for n, s, m in ((5, 1.0, 3.0), (11, 1e-3, -2.0), (1, 5.0, 0.0))]
    moments = moments_for(STATS)
    merged = merge_moments(torch.stack([tensor_moments(p, moments).double() for p in parts]),
                           [float(p.numel()) for p in parts], moments)
    got = finalize_moments(merged.numpy()[None], moments, np.array([sum(p.numel() for p in parts)]),
                           np.array([0.0]), STATS)[0]
    np.testing.assert_allclose(got, np_stats(torch.cat(parts).numpy()), rtol=1e-6)

"""One stacked block of raw reductions for many tensors equals each tensor's statistics (NumPy oracle)."""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.tensor_stats import finalize_moments, group_moments, moments_for

STATS = (R.MEAN, R.MEAN_ABS, R.STD, R.NORM, R.MAX_ABS, R.ZERO_FRAC, R.NONFINITE)


def np_stats(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        return np.array([a.mean(), np.abs(a).mean(), a.std(ddof=1), np.sqrt((a * a).sum()), np.abs(a).max(),
                         (a == 0).mean(), float((~np.isfinite(a)).sum())])


def _block_stats(xs: list[torch.Tensor]) -> np.ndarray:
    moments = moments_for(STATS)
    raw = group_moments(xs, moments).double().numpy()
    return finalize_moments(raw, moments, np.array([x.numel() for x in xs]), np.array([sum(x.shape) for x in xs]),
                            STATS)


def test_mixed_block_matches_each_tensor() -> None:
    g = torch.Generator().manual_seed(0)
    nan = torch.randn(7, 3, generator=g)
    nan[1, 2] = float("nan")
    xs = [torch.randn(16, 9, generator=g).t(),  # a transposed view
          torch.relu(torch.randn(33, generator=g)),  # zeros
          (torch.rand(8, 8, generator=g) * 2 - 1) * 1e30,  # finite, float32 squares overflow
          nan,
          torch.randn(5, generator=g).double()]  # another dtype in the same block
    got = _block_stats(xs)
    for row, x in zip(got, xs):
        want = np_stats(x.numpy())
        finite = np.isfinite(want)
        np.testing.assert_allclose(row[finite], want[finite], rtol=1e-5)
        assert row[-1] == want[-1]


def test_std_stays_exact_when_the_mean_dwarfs_it() -> None:
    g = torch.Generator().manual_seed(1)
    xs = [1e4 + torch.randn(256, 64, generator=g), -1e4 + torch.randn(300, generator=g)]
    got = _block_stats(xs)
    for row, x in zip(got, xs):
        np.testing.assert_allclose(row[STATS.index(R.STD)], x.double().numpy().std(ddof=1), rtol=1e-4)

"""Statistics along a leading member axis (the ensemble's M models) equal each member's own, computed in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.quantities import ActivationStats, Inputs, TensorStats, UpdateRatio, family_of
from gradprobe.quantities.histograms import histogram, unpack_histograms
from gradprobe.quantities.tensor_stats import _exact, moments_for
from gradprobe.quantities.update_ratio import update_norms

STATS = (R.MEAN, R.MEAN_ABS, R.STD, R.NORM, R.MAX_ABS, R.ZERO_FRAC, R.NONFINITE, R.SUM_ABS_PER_SHAPE)
M = 5
NAN_MEMBER, HUGE_MEMBER = 1, 3


def np_stats(a: np.ndarray) -> np.ndarray:
    """STATS of one member's tensor ``a``, in float64 NumPy."""
    flat = a.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        return np.array([flat.mean(), np.abs(flat).mean(), flat.std(ddof=1), np.sqrt((flat * flat).sum()),
                         np.abs(flat).max(), (flat == 0).mean(), float((~np.isfinite(flat)).sum()),
                         np.abs(flat).sum() / sum(a.shape)])


def _members() -> list[torch.Tensor]:
    """Tensors (M, ...): one member holds NaN and Inf, another huge finite values (float32 sums overflow)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(M, 6, 4, generator=g), torch.relu(torch.randn(M, 11, generator=g)),
          torch.randn(M, 3, 2, 2, generator=g) + 50.0]  # |mean| >> std: the centred norm keeps std exact
    xs[0][NAN_MEMBER, 2, 1] = float("nan")
    xs[0][NAN_MEMBER, 4, 0] = float("inf")
    xs[1][NAN_MEMBER, 3] = -float("inf")
    xs[1][HUGE_MEMBER] = (torch.rand(11, generator=g) * 2 - 1) * 3e38
    return xs


def _check_rows(got: np.ndarray, xs: list[torch.Tensor]) -> None:
    """``got`` (M * tensors, STATS) member-major against NumPy on each member's slice."""
    assert got.shape == (M * len(xs), len(STATS))
    for m in range(M):
        for t, x in enumerate(xs):
            want, row = np_stats(x[m].numpy()), got[m * len(xs) + t]
            nonfinite = STATS.index(R.NONFINITE)
            assert row[nonfinite] == want[nonfinite], (m, t)
            if want[nonfinite] == 0:  # every other member and tensor: finite and exact
                assert np.isfinite(row).all(), (m, t)
                np.testing.assert_allclose(row, want, rtol=2e-5, atol=1e-7, err_msg=f"member {m} tensor {t}")


def test_tensor_stats_per_member_match_numpy() -> None:
    xs = _members()
    q = TensorStats(R.GRAD, STATS)
    raw = q.raw_block(xs, members=M).double().numpy()
    meta = np.tile([q.meta(Inputs(x[0])) for x in xs], (M, 1))  # one member's element count and shape
    got = q.finalize(raw, meta, STATS)
    _check_rows(got, xs)
    counts = got[:, STATS.index(R.NONFINITE)].reshape(M, len(xs))
    assert counts[NAN_MEMBER].tolist() == [2, 1, 0] and counts.sum() == 3  # only the NaN member counts any
    huge = got[HUGE_MEMBER * len(xs) + 1]
    assert huge[STATS.index(R.NORM)] > 1e38  # sum of squares ~1e77: float32 would overflow, float64 does not


def test_member_path_without_host_reads_matches_numpy() -> None:
    """The rows accelerators take (every member rescaled by its max, counts without a host read)."""
    xs = _members()
    q = TensorStats(R.GRAD, STATS)
    moments = moments_for(STATS)
    raw = torch.stack([_exact(x.reshape(M, -1), moments, dim=1) for x in xs], dim=1).reshape(-1, len(moments))
    meta = np.tile([q.meta(Inputs(x[0])) for x in xs], (M, 1))
    _check_rows(q.finalize(raw.numpy(), meta, STATS), xs)


def test_activation_stats_per_member_match_numpy_derivative_masks() -> None:
    """Dead units by each member's derivative, saturated and negative fractions, for members of different families."""
    modules = [nn.ReLU(), nn.ReLU(), nn.ELU(), nn.Sigmoid(), nn.LeakyReLU(0.1)]
    g = torch.Generator().manual_seed(1)
    batch, units = 16, 12
    shift = torch.linspace(-9.0, 3.0, units)  # units far left are dead for ReLU and ELU, far right saturate sigmoid
    z = torch.randn(M, batch, units, generator=g) + shift * torch.tensor([1.0, 1.0, 1.0, 2.5, 1.0])[:, None, None]
    out = torch.stack([mod(z[m]) for m, mod in enumerate(modules)])  # (M, B, units)
    families = [family_of(mod) for mod in modules]
    stats = (R.MEAN, R.STD, R.NORM, R.MEAN_ABS, R.MAX_ABS, R.NONFINITE, R.DEAD_FRAC, R.SATURATED_FRAC,
             R.NEGATIVE_FRAC)
    q = ActivationStats(stats)
    union = q.member_stats(families)
    raw = q.raw_members(out, z, families).double().numpy()
    meta = np.array([q.meta(Inputs(out[m])) for m in range(M)])
    got = q.finalize(raw, meta, union)  # (M, len(union))
    zn, on = z.double().numpy(), out.double().numpy()
    plain = tuple(s for s in stats if s not in q.extras)
    derivative = [zn[0] > 0, zn[1] > 0, np.where(zn[2] > 0, 1.0, np.exp(zn[2])), None, None]  # relu, elu
    for m, mod in enumerate(modules):
        keep = q.stats_for(Inputs(out[m], family=families[m]))
        value = dict(zip(union, got[m]))
        flat = on[m].ravel()
        np.testing.assert_allclose([value[s] for s in (R.MEAN, R.STD, R.NORM, R.MEAN_ABS, R.MAX_ABS)],
                                   [flat.mean(), flat.std(ddof=1), np.linalg.norm(flat), np.abs(flat).mean(),
                                    np.abs(flat).max()], rtol=1e-5, atol=1e-7)
        if derivative[m] is not None:
            dead = (np.abs(derivative[m]) < 1e-3).all(axis=0)  # ~0 for every example of the batch
            assert 0 < dead.mean() < 1
            assert keep == plain + (R.DEAD_FRAC,) and value[R.DEAD_FRAC] == dead.mean(), mod
        if isinstance(mod, nn.Sigmoid):
            saturated = ((on[m] <= 0.01) | (on[m] >= 0.99)).mean()
            assert 0 < saturated < 1
            assert keep == plain + (R.SATURATED_FRAC,) and value[R.SATURATED_FRAC] == pytest.approx(saturated)
        if isinstance(mod, nn.LeakyReLU):
            assert keep == plain + (R.NEGATIVE_FRAC,) and value[R.NEGATIVE_FRAC] == pytest.approx((zn[m] < 0).mean())


def test_histograms_per_member_match_numpy() -> None:
    xs = _members()
    bins = 10
    for x in xs:
        edges, counts, nonfinite = unpack_histograms(histogram(x, bins, members=M).numpy(), bins)
        for m in range(M):
            a = x[m].numpy().ravel()
            finite = a[np.isfinite(a)].astype(np.float64)
            np.testing.assert_array_equal(edges[m], np.linspace(finite.min(), finite.max(), bins + 1))
            want, _ = np.histogram(finite, bins=edges[m])
            assert counts[m].tolist() == want.tolist()
            assert nonfinite[m] == (~np.isfinite(a)).sum()


def test_update_ratio_per_member_matches_numpy() -> None:
    g = torch.Generator().manual_seed(2)
    before = [torch.randn(M, 4, 3, generator=g), torch.randn(M, 4, generator=g)]
    before[1][2] = 0.0  # a zero-initialised bias of one member: its ratio is inf once it moves
    after = [b + 0.01 * torch.randn(b.shape, generator=g) for b in before]
    with np.errstate(divide="ignore"):
        want = [[np.linalg.norm(a[m].numpy() - b[m].numpy()) / np.linalg.norm(b[m].numpy()) for b, a in
                 zip(before, after)] for m in range(M)]  # member-major rows
    raw = update_norms([b.clone() for b in before], after, members=M).double().numpy()  # (M * 2, 2)
    got = UpdateRatio((R.UPDATE_RATIO,)).finalize(raw, np.zeros((len(raw), 0)), (R.UPDATE_RATIO,))[:, 0]
    np.testing.assert_allclose(got, np.array(want, dtype=np.float64).ravel(), rtol=1e-5)
    assert np.isinf(got[2 * 2 + 1]) and np.isfinite(np.delete(got, 2 * 2 + 1)).all()

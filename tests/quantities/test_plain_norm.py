"""The norm without the std is one plain L2 reduction: checked against NumPy, also where float32 overflows."""

from __future__ import annotations

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.tensor_stats import ROOT_SS, ROOT_SSD, group_moments, merge_moments, moments_for, tensor_stats


def test_the_norm_alone_needs_one_reduction_and_with_the_std_none_extra():
    assert moments_for((R.NORM,)) == (ROOT_SS,)
    assert ROOT_SS not in moments_for((R.NORM, R.STD)) and ROOT_SSD in moments_for((R.NORM, R.STD))


def test_norm_alone_equals_numpy_also_past_float32_overflow():
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 1e25):  # squares of 1e25 overflow float32: the row is redone scaled, in float64
        x = torch.randn(64, 33, generator=gen) * scale
        got = tensor_stats(x, (R.NORM, R.MEAN_ABS))
        ref = x.double().numpy()
        np.testing.assert_allclose(got, [np.linalg.norm(ref), np.abs(ref).mean()], rtol=1e-5)


def test_members_and_merged_parts_give_each_member_s_and_the_whole_s_norm():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 5, generator=gen)  # 3 members
    moments = moments_for((R.NORM,))
    rows = group_moments([x], moments, members=3).numpy()[:, 0]
    np.testing.assert_allclose(rows, [np.linalg.norm(x[m].double().numpy()) for m in range(3)], rtol=1e-6)
    merged = merge_moments(torch.tensor(rows[:, None]), [35.0] * 3, moments)
    np.testing.assert_allclose(merged.item(), np.linalg.norm(x.double().numpy()), rtol=1e-6)

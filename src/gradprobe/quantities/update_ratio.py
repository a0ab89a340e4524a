"""||w_after - w_before|| / ||w_before||: the relative size of the step the optimizer actually took."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity


def _norms(xs: list[torch.Tensor], members: int | None) -> torch.Tensor:
    """L2 norm of each tensor ``(n,)``; with ``members``, of each member, member-major ``(M * n,)``."""
    if members is None:
        return torch.stack(torch._foreach_norm(xs))
    return torch.stack([torch.linalg.vector_norm(x.reshape(members, -1), dim=1) for x in xs], dim=1).reshape(-1)


def update_norms(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor],
                 members: int | None = None) -> torch.Tensor:
    """``(n, 2)`` rows of ``[||after - before||, ||before||]`` from fused foreach calls.

    ``before`` is overwritten with ``before - after``: it is the probe's scratch snapshot, and
    subtracting in place avoids allocating a second copy of every weight on each recorded step.
    With ``members=M`` the tensors hold M members along their leading dimension and the rows are
    per member, ``(M * n, 2)``, member-major (row ``m * n + t``), as ``tensor_stats.group_moments``.
    """
    base = _norms(list(before), members)
    torch._foreach_sub_(list(before), [a.detach() for a in after])
    return torch.stack([_norms(list(before), members), base], dim=1).float()


class UpdateRatio(Quantity):
    """Update ratio of a parameter for the step between a snapshot and now."""

    kind = R.WEIGHT
    available = (R.UPDATE_RATIO,)

    def raw(self, inputs: Inputs) -> torch.Tensor:
        if inputs.previous is None:
            raise RuntimeError("UpdateRatio needs a weight snapshot")
        return update_norms([inputs.previous.clone()], [inputs.value])[0]

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        return ()

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        """Ratio; ``inf`` when the weight was exactly zero and moved (a zero-initialised bias), 0 if neither."""
        diff, base = raw[:, 0], raw[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(base > 0, diff / base, np.where(diff > 0, np.inf, 0.0))
        return ratio[:, None]


__all__ = ["UpdateRatio", "update_norms"]

"""The activation modules gradprobe adds to torch's: maxout and erf."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradprobe.errors import GradprobeError

__all__ = ["Erf", "Maxout"]


class Maxout(nn.Module):
    """Max over groups of ``k`` consecutive features: ``(..., k*w) -> (..., w)``."""

    def __init__(self, k: int = 2) -> None:
        """Create the module.

        Args:
            k: Group size, an integer >= 2.

        Raises:
            GradprobeError: If ``k`` is not an integer >= 2.
        """
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise GradprobeError(f"Maxout.k: {k!r} is not a group size; allowed: integers >= 2")
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        """Take the max of each group of ``k`` consecutive features.

        Args:
            x: Input of shape ``(..., k*w)``.

        Returns:
            Tensor of shape ``(..., w)``.

        Raises:
            ValueError: If the last dimension is not a multiple of ``k``.
        """
        features = x.shape[-1]
        if features % self.k:
            raise ValueError(
                f"Maxout: last dimension {features} is not a multiple of k={self.k}; "
                f"allowed: shapes (..., k*w)"
            )
        # reshape, not view: inputs may be non-contiguous (e.g. transposed)
        return x.reshape(*x.shape[:-1], features // self.k, self.k).amax(-1)  # (..., w)

    def extra_repr(self) -> str:
        """Show the group size in ``repr``.

        Returns:
            e.g. ``"k=2"``.
        """
        return f"k={self.k}"


class Erf(nn.Module):
    """The error function ``x -> erf(x)``, bounded in (-1, 1): the activation of the mean-field literature."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply erf elementwise (same shape)."""
        return torch.erf(x)

"""The ensemble's fused activation kernels, bound to a spec's arguments (the ops live in the registry).

The hand-written backward calls the kernel ``loss.backward()`` runs for each activation module, so
dL/dz is one fused op per activation with autograd's rounding and its conventions at kinks and on
non-finite values. Every function writes into ``out`` (a slice of a preallocated buffer), so a
group mixing activations needs no concatenation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gradprobe.activations import Kernel
from gradprobe.models.activations import ActivationSpec

__all__ = ["backward_kernel", "forward_kernel", "supported"]


def supported(spec: ActivationSpec) -> bool:
    """Whether the registry gives ``spec`` an ensemble kernel (all but maxout and linear)."""
    return spec.entry.kernel is not None


def _kernel(spec: ActivationSpec) -> Kernel:
    kernel = spec.entry.kernel
    if kernel is None:
        raise ValueError(f"ensemble: activation {str(spec)!r} has no fused kernel; allowed: specs where supported()")
    return kernel


def forward_kernel(spec: ActivationSpec) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """``(z, out) -> None`` writing phi(z) into out for ``spec`` (see :func:`supported`)."""
    fn, args = _kernel(spec).forward, spec.args
    return lambda z, out: fn(z, args, out)


def backward_kernel(spec: ActivationSpec) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], object]:
    """``(dh, z, h, out) -> None`` writing dL/dz into out for ``spec`` (see :func:`supported`)."""
    fn, args = _kernel(spec).backward, spec.args
    return lambda dh, z, h, out: fn(dh, z, h, args, out)

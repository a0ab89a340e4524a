"""Elementwise activations and autograd's own backward kernels, written into preallocated outputs.

The ensemble's hand-written backward calls the kernel that ``loss.backward()`` runs for each
activation module (``sigmoid_backward(grad, output)``, ``threshold_backward`` for ReLU, ...), so
dL/dz is one fused op per activation with autograd's rounding and its conventions at kinks and
on non-finite values. Every function writes into ``out`` (a slice of a preallocated buffer), so a
group mixing activations needs no concatenation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gradprobe.models.activations import ActivationSpec

_A = torch.ops.aten
_SELU = (1.6732632423543772848170429916717, 1.0507009873554804934193349852946)  # torch's alpha, scale
_SOFTPLUS = (1.0, 20.0)  # nn.Softplus defaults: beta, threshold
_ERF_SLOPE = 2 / math.sqrt(math.pi)  # erf'(0); erf'(z) = _ERF_SLOPE * exp(-z^2)

Forward = Callable[[torch.Tensor, tuple[float, ...], torch.Tensor], object]
Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple[float, ...], torch.Tensor], object]

# phi(z) into out, as the activation module computes it: (z, args, out)
_FORWARD: dict[str, Forward] = {
    "sigmoid": lambda z, a, out: _A.sigmoid.out(z, out=out),
    "tanh": lambda z, a, out: _A.tanh.out(z, out=out),
    "relu": lambda z, a, out: _A.relu.out(z, out=out),
    "leaky_relu": lambda z, a, out: _A.leaky_relu.out(z, a[0], out=out),
    "elu": lambda z, a, out: _A.elu.out(z, a[0], 1, 1, out=out),
    "selu": lambda z, a, out: _A.elu.out(z, *_SELU, 1, out=out),  # torch.selu is elu(alpha, scale)
    "gelu": lambda z, a, out: _A.gelu.out(z, out=out),
    "silu": lambda z, a, out: _A.silu.out(z, out=out),
    "softplus": lambda z, a, out: _A.softplus.out(z, *_SOFTPLUS, out=out),
    "hard_sigmoid": lambda z, a, out: _A.hardsigmoid.out(z, out=out),
    "erf": lambda z, a, out: _A.erf.out(z, out=out),
}

# dL/dz into out from dL/dh, z and h = phi(z), as autograd's backward node does: (dh, z, h, args, out)
_BACKWARD: dict[str, Backward] = {
    "sigmoid": lambda dh, z, h, a, out: _A.sigmoid_backward.grad_input(dh, h, grad_input=out),
    "tanh": lambda dh, z, h, a, out: _A.tanh_backward.grad_input(dh, h, grad_input=out),
    "relu": lambda dh, z, h, a, out: _A.threshold_backward.grad_input(dh, h, 0, grad_input=out),
    "leaky_relu": lambda dh, z, h, a, out: _A.leaky_relu_backward.grad_input(dh, z, a[0], False, grad_input=out),
    "elu": lambda dh, z, h, a, out: _A.elu_backward.grad_input(dh, a[0], 1, 1, False, z, grad_input=out),
    "selu": lambda dh, z, h, a, out: _A.elu_backward.grad_input(dh, *_SELU, 1, False, z, grad_input=out),
    "gelu": lambda dh, z, h, a, out: _A.gelu_backward.grad_input(dh, z, grad_input=out),
    "silu": lambda dh, z, h, a, out: _A.silu_backward.grad_input(dh, z, grad_input=out),
    "softplus": lambda dh, z, h, a, out: _A.softplus_backward.grad_input(dh, z, *_SOFTPLUS, grad_input=out),
    "hard_sigmoid": lambda dh, z, h, a, out: _A.hardsigmoid_backward.grad_input(dh, z, grad_input=out),
    # erf has no backward kernel: autograd's formula, 2/sqrt(pi) * exp(-z^2) * grad, in its order
    "erf": lambda dh, z, h, a, out: torch.mul(torch.exp(-z.pow(2)).mul_(_ERF_SLOPE), dh, out=out),
}
# "linear" (nn.Identity) is left to the one-model loop: the probe records its deltas in another
# order (the Identity's backward hook fires after the preceding Linear's), which rows here would not match.


def supported(spec: ActivationSpec) -> bool:
    """Whether the ensemble has the forward and backward kernels of ``spec`` (all but maxout and linear)."""
    return spec.name in _FORWARD


def forward_kernel(spec: ActivationSpec) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """``(z, out) -> None`` writing phi(z) into out for ``spec`` (see :func:`supported`)."""
    fn, args = _FORWARD[spec.name], spec.args
    return lambda z, out: fn(z, args, out)


def backward_kernel(spec: ActivationSpec) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], object]:
    """``(dh, z, h, out) -> None`` writing dL/dz into out for ``spec`` (see :func:`supported`)."""
    fn, args = _BACKWARD[spec.name], spec.args
    return lambda dh, z, h, out: fn(dh, z, h, args, out)


__all__ = ["backward_kernel", "forward_kernel", "supported"]

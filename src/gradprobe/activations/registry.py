"""The activation registry: one entry per activation, read by models, quantities, train and theory.

An entry says how to build the module, evaluate phi and phi', which failure family the probe's
dead/saturated/negative statistics use, the ensemble engine's fused kernels and the breakpoints of
the mean-field integrands. Spec strings are parsed against it in ``models.activations``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradprobe.activations import functions as D
from gradprobe.activations.family import DeadRegion, Family
from gradprobe.activations.functions import HARD_SIGMOID_EDGE as _HS
from gradprobe.activations.functions import SELU_ALPHA, SELU_SCALE, SOFTPLUS_BETA, SOFTPLUS_THRESHOLD
from gradprobe.activations.modules import Erf, Maxout

__all__ = ["ALIASES", "REGISTRY", "Activation", "Kernel", "Param", "families"]

_A = torch.ops.aten

Forward = Callable[[Tensor, tuple[float, ...], Tensor], object]  # (z, args, out): phi(z) into out
Backward = Callable[[Tensor, Tensor, Tensor, tuple[float, ...], Tensor], object]  # (dh, z, h, args, out)


@dataclass(frozen=True)
class Param:
    """The one optional numeric argument of an activation."""

    name: str  # upper-case, as shown in usage, e.g. ALPHA
    default: float
    ok: Callable[[float], bool]
    allowed: str
    cast: Callable[[float], object] = float  # how the module's constructor takes it (maxout: int)


@dataclass(frozen=True)
class Kernel:
    """The ensemble's fused ops, writing into preallocated ``out`` as the module and autograd's node do.

    ``backward`` calls the kernel ``loss.backward()`` runs for the module (``sigmoid_backward(grad,
    output)``, ``threshold_backward`` for ReLU, ...): autograd's rounding and its conventions at kinks.
    """

    forward: Forward
    backward: Backward


@dataclass(frozen=True)
class Activation:
    """Everything gradprobe knows about one activation; callables take the canonical args after x."""

    module: type[nn.Module]  # built as module(*args cast by param); also the key of its probe family
    fn: Callable[..., Tensor] | None  # phi(x, *args), same shape; None if not elementwise (maxout)
    derivative: Callable[..., Tensor] | None  # phi'(x, *args), matching autograd exactly; None for maxout
    family: Family | None  # dead region / asymptotes / leaky for the probe; None: no failure statistic
    param: Param | None = None
    kernel: Kernel | None = None  # None: the ensemble engine leaves it to the one-model loop
    kinks: tuple[float, ...] = ()  # x besides 0 where phi' jumps: mean-field quadrature breakpoints


def _non_negative(value: float) -> bool:
    return value >= 0


def _group_size(value: float) -> bool:
    return value.is_integer() and value >= 2


_SMOOTH_TAIL = Family(smooth_from=0.0)  # exponential left tail: flat to tolerance somewhere below 0

_ENTRIES: dict[str, Activation] = {
    "sigmoid": Activation(nn.Sigmoid, torch.sigmoid, D.d_sigmoid, Family(bounds=(0.0, 1.0)), kernel=Kernel(
        lambda z, a, out: _A.sigmoid.out(z, out=out),
        lambda dh, z, h, a, out: _A.sigmoid_backward.grad_input(dh, h, grad_input=out))),
    "tanh": Activation(nn.Tanh, torch.tanh, D.d_tanh, Family(bounds=(-1.0, 1.0)), kernel=Kernel(
        lambda z, a, out: _A.tanh.out(z, out=out),
        lambda dh, z, h, a, out: _A.tanh_backward.grad_input(dh, h, grad_input=out))),
    "relu": Activation(nn.ReLU, torch.relu, D.d_relu, Family(dead=DeadRegion(below=0.0, on_output=True)), kernel=Kernel(
        lambda z, a, out: _A.relu.out(z, out=out),
        lambda dh, z, h, a, out: _A.threshold_backward.grad_input(dh, h, 0, grad_input=out))),
    "leaky_relu": Activation(
        nn.LeakyReLU, F.leaky_relu, D.d_leaky_relu, Family(leaky=True),
        Param("ALPHA", 0.01, _non_negative, "ALPHA >= 0, e.g. leaky_relu:0.01"), Kernel(
            lambda z, a, out: _A.leaky_relu.out(z, a[0], out=out),
            lambda dh, z, h, a, out: _A.leaky_relu_backward.grad_input(dh, z, a[0], False, grad_input=out))),
    "elu": Activation(
        nn.ELU, F.elu, D.d_elu, _SMOOTH_TAIL, Param("ALPHA", 1.0, _non_negative, "ALPHA >= 0, e.g. elu:1"), Kernel(
            lambda z, a, out: _A.elu.out(z, a[0], 1, 1, out=out),
            lambda dh, z, h, a, out: _A.elu_backward.grad_input(dh, a[0], 1, 1, False, z, grad_input=out))),
    "selu": Activation(nn.SELU, F.selu, D.d_selu, _SMOOTH_TAIL, kernel=Kernel(  # torch.selu is elu(alpha, scale)
        lambda z, a, out: _A.elu.out(z, SELU_ALPHA, SELU_SCALE, 1, out=out),
        lambda dh, z, h, a, out: _A.elu_backward.grad_input(dh, SELU_ALPHA, SELU_SCALE, 1, False, z,
                                                             grad_input=out))),
    "gelu": Activation(nn.GELU, F.gelu, D.d_gelu, Family(smooth_from=-1.5), kernel=Kernel(  # f' min at -sqrt(2)
        lambda z, a, out: _A.gelu.out(z, out=out),
        lambda dh, z, h, a, out: _A.gelu_backward.grad_input(dh, z, grad_input=out))),
    "silu": Activation(nn.SiLU, F.silu, D.d_silu, Family(smooth_from=-2.5), kernel=Kernel(  # f' min near -2.40
        lambda z, a, out: _A.silu.out(z, out=out),
        lambda dh, z, h, a, out: _A.silu_backward.grad_input(dh, z, grad_input=out))),
    "softplus": Activation(nn.Softplus, F.softplus, D.d_softplus, _SMOOTH_TAIL, kernel=Kernel(
        lambda z, a, out: _A.softplus.out(z, SOFTPLUS_BETA, SOFTPLUS_THRESHOLD, out=out),
        lambda dh, z, h, a, out: _A.softplus_backward.grad_input(dh, z, SOFTPLUS_BETA, SOFTPLUS_THRESHOLD,
                                                                 grad_input=out)),
        kinks=(SOFTPLUS_THRESHOLD,)),  # slope jumps from sigmoid(20) to exactly 1
    "hard_sigmoid": Activation(
        nn.Hardsigmoid, F.hardsigmoid, D.d_hard_sigmoid,
        Family(dead=DeadRegion(below=-_HS, above=_HS), bounds=(0.0, 1.0)), kernel=Kernel(
            lambda z, a, out: _A.hardsigmoid.out(z, out=out),
            lambda dh, z, h, a, out: _A.hardsigmoid_backward.grad_input(dh, z, grad_input=out)),
        kinks=(-_HS, _HS)),
    "erf": Activation(Erf, torch.erf, D.d_erf, Family(bounds=(-1.0, 1.0)), kernel=Kernel(
        lambda z, a, out: _A.erf.out(z, out=out),
        # erf has no backward kernel: autograd's formula, 2/sqrt(pi) * exp(-z^2) * grad, in its order
        lambda dh, z, h, a, out: torch.mul(torch.exp(-z.pow(2)).mul_(D.ERF_SLOPE), dh, out=out))),
    # No kernel: the probe records nn.Identity's deltas in another order (its backward hook fires
    # after the preceding Linear's), which the ensemble's rows would not match.
    "linear": Activation(nn.Identity, torch.clone, D.ones, None),
    "maxout": Activation(Maxout, None, None, None,
                         Param("K", 2.0, _group_size, "an integer K >= 2, e.g. maxout:2", cast=int)),
}

#: Canonical name -> entry, in registry order.
REGISTRY: Mapping[str, Activation] = MappingProxyType(_ENTRIES)
#: Other accepted spellings -> canonical name.
ALIASES: Mapping[str, str] = MappingProxyType({"swish": "silu"})


def families() -> dict[type[nn.Module], Family]:
    """The probe family of every registered module class that has one, e.g. ``{nn.ReLU: Family(dead=...)}``."""
    return {entry.module: entry.family for entry in _ENTRIES.values() if entry.family is not None}

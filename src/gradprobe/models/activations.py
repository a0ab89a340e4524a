"""Activation registry: spec string -> fresh ``nn.Module``, elementwise function and derivative.

The closed-form derivatives feed theory code (e.g. the product of derivatives along depth); at
kinks they follow torch's autograd convention (relu'(0) = 0, leaky_relu'(0) = alpha,
hard_sigmoid'(+-3) = 0) so they match ``torch.autograd`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradprobe.quantities.activation_stats import FAMILIES, Family

from ..errors import GradprobeError
from .spec import bad_arg_error, check_arity, format_spec, parse_spec, unknown_name_error

__all__ = ["ACTIVATIONS", "ActivationSpec", "Erf", "Maxout", "activation_spec"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SOFTPLUS_THRESHOLD = 20.0  # nn.Softplus default: returns x itself above this, so slope is 1


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


# The probe's saturation statistics apply to erf as to tanh: bounded, asymptotes -1 and 1.
FAMILIES[Erf] = Family(bounds=(-1.0, 1.0))


def _ones(x: Tensor) -> Tensor:
    return torch.ones_like(x)


def _d_sigmoid(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _d_tanh(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return 1 - t * t


def _d_erf(x: Tensor) -> Tensor:
    return (2 / math.sqrt(math.pi)) * torch.exp(-x * x)  # torch.erf's autograd formula


def _d_relu(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _d_leaky_relu(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, alpha))


def _d_elu(x: Tensor, alpha: float) -> Tensor:
    # clamp first so exp never overflows on the branch that where() discards
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp(max=0)))


def _d_selu(x: Tensor) -> Tensor:
    return _SELU_SCALE * _d_elu(x, _SELU_ALPHA)


def _d_gelu(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def _d_silu(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _d_softplus(x: Tensor) -> Tensor:
    return torch.where(x > _SOFTPLUS_THRESHOLD, torch.ones_like(x), torch.sigmoid(x))


def _d_hard_sigmoid(x: Tensor) -> Tensor:
    return ((x > -3) & (x < 3)).to(x.dtype) / 6


@dataclass(frozen=True)
class _Param:
    """The one optional numeric argument of an activation."""

    name: str  # upper-case, as shown in usage, e.g. ALPHA
    default: float
    ok: Callable[[float], bool]
    allowed: str


@dataclass(frozen=True)
class _Entry:
    """How to build, evaluate and differentiate one activation; args are the canonical args."""

    module: Callable[..., nn.Module]
    fn: Callable[..., Tensor] | None
    derivative: Callable[..., Tensor] | None
    param: _Param | None = None


def _non_negative(value: float) -> bool:
    return value >= 0


def _group_size(value: float) -> bool:
    return value.is_integer() and value >= 2


_ENTRIES: dict[str, _Entry] = {
    "sigmoid": _Entry(nn.Sigmoid, torch.sigmoid, _d_sigmoid),
    "tanh": _Entry(nn.Tanh, torch.tanh, _d_tanh),
    "relu": _Entry(nn.ReLU, torch.relu, _d_relu),
    "leaky_relu": _Entry(
        nn.LeakyReLU, F.leaky_relu, _d_leaky_relu,
        _Param("ALPHA", 0.01, _non_negative, "ALPHA >= 0, e.g. leaky_relu:0.01"),
    ),
    "elu": _Entry(
        nn.ELU, F.elu, _d_elu, _Param("ALPHA", 1.0, _non_negative, "ALPHA >= 0, e.g. elu:1")
    ),
    "selu": _Entry(nn.SELU, F.selu, _d_selu),
    "gelu": _Entry(nn.GELU, F.gelu, _d_gelu),
    "silu": _Entry(nn.SiLU, F.silu, _d_silu),
    "softplus": _Entry(nn.Softplus, F.softplus, _d_softplus),
    "hard_sigmoid": _Entry(nn.Hardsigmoid, F.hardsigmoid, _d_hard_sigmoid),
    "erf": _Entry(Erf, torch.erf, _d_erf),
    "linear": _Entry(nn.Identity, torch.clone, _ones),
    "maxout": _Entry(
        lambda k: Maxout(int(k)), None, None,
        _Param("K", 2.0, _group_size, "an integer K >= 2, e.g. maxout:2"),
    ),
}
_ALIASES = {"swish": "silu"}

#: Canonical activation names, in registry order (aliases such as ``swish`` are also accepted).
ACTIVATIONS: tuple[str, ...] = tuple(_ENTRIES)


def _canonical_args(name: str, args: tuple[float, ...], text: str, field: str) -> tuple[float, ...]:
    """Check the arguments of a known activation and fill in the default.

    Args:
        name: Canonical activation name.
        args: Parsed arguments.
        text: Spec text as given, for messages.
        field: Config field, for messages.

    Returns:
        The arguments with the default filled in, e.g. ``(0.01,)`` for ``leaky_relu``.

    Raises:
        GradprobeError: On a wrong argument count or an out-of-range value.
    """
    param = _ENTRIES[name].param
    check_arity(field, text, name, args, [()] if param is None else [(), (param.name,)])
    if param is None:
        return ()
    value = float(args[0]) if args else param.default
    if not param.ok(value):
        raise bad_arg_error(field, text, f"{param.name}={value:g}", param.allowed)
    return (value,)


@dataclass(frozen=True)
class ActivationSpec:
    """A validated activation with its arguments; build one with :func:`activation_spec`."""

    name: str  # canonical name, one of ACTIVATIONS
    args: tuple[float, ...] = ()  # canonical arguments, defaults filled in

    def __post_init__(self) -> None:
        """Validate a directly constructed spec and fill in default arguments.

        Raises:
            GradprobeError: If the name is unknown or the arguments are invalid.
        """
        if self.name not in _ENTRIES:
            raise unknown_name_error(
                "ActivationSpec.name", self.name, self.name, "an activation", ACTIVATIONS
            )
        args = tuple(float(a) for a in self.args)
        text = format_spec(self.name, args)
        object.__setattr__(self, "args", _canonical_args(self.name, args, text, "ActivationSpec"))

    def __str__(self) -> str:
        """Render the canonical spec string, e.g. ``leaky_relu:0.01``."""
        return format_spec(self.name, self.args)

    def module(self) -> nn.Module:
        """Build a fresh activation module.

        Returns:
            The torch built-in (``nn.ReLU()``, ``nn.LeakyReLU(alpha)``, ...) or a ``Maxout(k)``.
        """
        return _ENTRIES[self.name].module(*self.args)

    @property
    def fn(self) -> Callable[[Tensor], Tensor] | None:
        """Elementwise function ``x -> phi(x)`` (same shape), or None for maxout."""
        fn = _ENTRIES[self.name].fn
        if fn is None:
            return None
        args = self.args
        return lambda x: fn(x, *args)

    @property
    def derivative(self) -> Callable[[Tensor], Tensor] | None:
        """Closed-form elementwise derivative ``x -> phi'(x)`` (same shape), or None for maxout."""
        derivative = _ENTRIES[self.name].derivative
        if derivative is None:
            return None
        args = self.args
        return lambda x: derivative(x, *args)

    @property
    def width_multiplier(self) -> int:
        """Pre-activation features per output feature: ``k`` for maxout, else 1."""
        return int(self.args[0]) if self.name == "maxout" else 1


def activation_spec(text: str, field: str = "model.activation") -> ActivationSpec:
    """Parse and validate an activation spec string.

    Args:
        text: e.g. ``"relu"``, ``"leaky_relu:0.1"``, ``"maxout(3)"``, ``"swish"``.
        field: Config field the text came from, used in error messages.

    Returns:
        The validated spec with canonical name and default arguments filled in.

    Raises:
        GradprobeError: On malformed text, an unknown name, a wrong argument count or an
            out-of-range argument (leaky_relu/elu ALPHA < 0, maxout K not an integer >= 2).
    """
    name, args = parse_spec(text, field)
    name = _ALIASES.get(name, name)
    if name not in _ENTRIES:
        raise unknown_name_error(field, text, name, "an activation", (*ACTIVATIONS, *_ALIASES))
    return ActivationSpec(name, _canonical_args(name, args, text, field))

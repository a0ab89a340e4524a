"""Activation spec strings -> validated :class:`ActivationSpec`, read from the registry (``gradprobe.activations``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from gradprobe.activations import ALIASES, REGISTRY, Activation, Erf, Maxout

from .spec import bad_arg_error, check_arity, format_spec, parse_spec, unknown_name_error

__all__ = ["ACTIVATIONS", "ActivationSpec", "Erf", "Maxout", "activation_spec"]

#: Canonical activation names, in registry order (aliases such as ``swish`` are also accepted).
ACTIVATIONS: tuple[str, ...] = tuple(REGISTRY)


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
    param = REGISTRY[name].param
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
        if self.name not in REGISTRY:
            raise unknown_name_error(
                "ActivationSpec.name", self.name, self.name, "an activation", ACTIVATIONS
            )
        args = tuple(float(a) for a in self.args)
        text = format_spec(self.name, args)
        object.__setattr__(self, "args", _canonical_args(self.name, args, text, "ActivationSpec"))

    def __str__(self) -> str:
        """Render the canonical spec string, e.g. ``leaky_relu:0.01``."""
        return format_spec(self.name, self.args)

    @property
    def entry(self) -> Activation:
        """The registry entry of this activation (kernels, family, mean-field kinks)."""
        return REGISTRY[self.name]

    def module(self) -> nn.Module:
        """Build a fresh activation module.

        Returns:
            The torch built-in (``nn.ReLU()``, ``nn.LeakyReLU(alpha)``, ...) or a ``Maxout(k)``.
        """
        param = self.entry.param
        args = () if param is None else tuple(param.cast(a) for a in self.args)
        return self.entry.module(*args)

    @property
    def fn(self) -> Callable[[Tensor], Tensor] | None:
        """Elementwise function ``x -> phi(x)`` (same shape), or None for maxout."""
        fn = self.entry.fn
        if fn is None:
            return None
        args = self.args
        return lambda x: fn(x, *args)

    @property
    def derivative(self) -> Callable[[Tensor], Tensor] | None:
        """Closed-form elementwise derivative ``x -> phi'(x)`` (same shape), or None for maxout."""
        derivative = self.entry.derivative
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
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise unknown_name_error(field, text, name, "an activation", (*ACTIVATIONS, *ALIASES))
    return ActivationSpec(name, _canonical_args(name, args, text, field))

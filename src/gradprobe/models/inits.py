"""Initialiser registry: spec string -> in-place weight init and its per-entry variance.

``weight_variance`` lets theory code compute ``sigma_w^2 = fan_in * Var(W_ij)`` without sampling.
Weights are ``(fan_out, fan_in)`` as in ``nn.Linear``; ``he_*`` and ``lecun_*`` use fan_in.
``cs231n:STD`` is ``STD * np.random.randn(fan_in, fan_out)`` transposed, drawn from a NumPy legacy
stream (``np.random.RandomState``) the caller positions, as the CS231n notebooks initialise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import GradprobeError
from .spec import bad_arg_error, check_arity, format_spec, parse_spec, unknown_name_error

__all__ = ["INITS", "InitSpec", "init_spec"]

_Args = tuple[float, ...]
_Apply = Callable[[Tensor, _Args, "torch.Generator | None"], object]


def _normal_args(args: _Args, text: str, field: str) -> _Args:
    mean, std = args if len(args) == 2 else (0.0, args[0] if args else 1.0)
    if std <= 0:
        raise bad_arg_error(field, text, f"STD={std:g}", "STD > 0, e.g. normal:0.1 or normal:0:0.1")
    return (mean, std)


def _uniform_args(args: _Args, text: str, field: str) -> _Args:
    if len(args) == 1:
        if args[0] <= 0:
            allowed = "A > 0 for U(-A, A), e.g. uniform:0.1"
            raise bad_arg_error(field, text, f"A={args[0]:g}", allowed)
        return (-args[0], args[0])
    low, high = args
    if low >= high:
        raise bad_arg_error(
            field, text, f"A={low:g} >= B={high:g}", "A < B for U(A, B), e.g. uniform:-0.1:0.1"
        )
    return (low, high)


def _orthogonal_args(args: _Args, text: str, field: str) -> _Args:
    gain = args[0] if args else 1.0
    if gain <= 0:
        raise bad_arg_error(field, text, f"GAIN={gain:g}", "GAIN > 0, e.g. orthogonal:1")
    return (gain,)


def _no_args(args: _Args, text: str, field: str) -> _Args:
    return ()


def _std_args(args: _Args, text: str, field: str) -> _Args:
    if args[0] <= 0:
        raise bad_arg_error(field, text, f"STD={args[0]:g}", "STD > 0, e.g. cs231n:0.1")
    return (args[0],)


def _no_torch_generator(w: Tensor, a: _Args, g: torch.Generator | None) -> None:
    raise GradprobeError(
        "model.init: 'cs231n' draws from NumPy's legacy stream, not a torch generator; "
        "build the model with train.setup.build_model (or pass stream= to InitSpec.apply)")


@dataclass(frozen=True)
class _Entry:
    """Accepted argument forms, canonicaliser, in-place init and Var(W_ij) of one initialiser."""

    forms: tuple[tuple[str, ...], ...]
    canonical: Callable[[_Args, str, str], _Args]
    apply: _Apply
    variance: Callable[[_Args, int, int], float]  # (args, fan_in, fan_out) -> Var(W_ij)
    legacy: bool = False  # draws from a NumPy legacy stream (InitSpec.apply's ``stream``)


_NONE: tuple[tuple[str, ...], ...] = ((),)
_I = nn.init
_ENTRIES: dict[str, _Entry] = {
    "normal": _Entry(
        ((), ("STD",), ("MEAN", "STD")), _normal_args,
        lambda w, a, g: _I.normal_(w, a[0], a[1], generator=g),
        lambda a, fi, fo: a[1] ** 2,
    ),
    "uniform": _Entry(
        (("A",), ("A", "B")), _uniform_args,
        lambda w, a, g: _I.uniform_(w, a[0], a[1], generator=g),
        lambda a, fi, fo: (a[1] - a[0]) ** 2 / 12,
    ),
    "glorot_uniform": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.xavier_uniform_(w, generator=g),
        lambda a, fi, fo: 2 / (fi + fo),
    ),
    "glorot_normal": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.xavier_normal_(w, generator=g),
        lambda a, fi, fo: 2 / (fi + fo),
    ),
    "he_uniform": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=g),
        lambda a, fi, fo: 2 / fi,
    ),
    "he_normal": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g),
        lambda a, fi, fo: 2 / fi,
    ),
    # LeCun = Kaiming with gain 1 ("linear"); plain (not truncated) normal, std 1/sqrt(fan_in)
    "lecun_normal": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.kaiming_normal_(w, mode="fan_in", nonlinearity="linear", generator=g),
        lambda a, fi, fo: 1 / fi,
    ),
    "lecun_uniform": _Entry(
        _NONE, _no_args,
        lambda w, a, g: _I.kaiming_uniform_(w, mode="fan_in", nonlinearity="linear", generator=g),
        lambda a, fi, fo: 1 / fi,
    ),
    # min(fi, fo) orthonormal rows/columns of norm GAIN spread over fi*fo entries of mean 0:
    # E[W_ij^2] = GAIN^2 / max(fi, fo) exactly (entries are dependent, but the mean square is exact)
    "orthogonal": _Entry(
        ((), ("GAIN",)), _orthogonal_args,
        lambda w, a, g: _I.orthogonal_(w, a[0], generator=g),
        lambda a, fi, fo: a[0] ** 2 / max(fi, fo),
    ),
    # CS231n: W = STD * randn(fan_in, fan_out) from np.random's legacy stream; torch holds W.T
    "cs231n": _Entry(
        (("STD",),), _std_args, _no_torch_generator, lambda a, fi, fo: a[0] ** 2, legacy=True,
    ),
}
_ALIASES = {
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
}

#: Canonical initialiser names (the xavier_* and kaiming_* aliases are also accepted).
INITS: tuple[str, ...] = tuple(_ENTRIES)


def _canonical_args(name: str, args: _Args, text: str, field: str) -> _Args:
    """Check the arguments of a known initialiser and fill in defaults.

    Args:
        name: Canonical initialiser name.
        args: Parsed arguments.
        text: Spec text as given, for messages.
        field: Config field, for messages.

    Returns:
        Canonical arguments: ``(MEAN, STD)`` for normal, ``(LOW, HIGH)`` for uniform,
        ``(GAIN,)`` for orthogonal, ``(STD,)`` for cs231n, ``()`` otherwise.

    Raises:
        GradprobeError: On a wrong argument count or an out-of-range value.
    """
    entry = _ENTRIES[name]
    check_arity(field, text, name, args, entry.forms)
    return entry.canonical(args, text, field)


@dataclass(frozen=True)
class InitSpec:
    """A validated weight initialiser; build one with :func:`init_spec`."""

    name: str  # canonical name, one of INITS
    args: tuple[float, ...] = ()  # canonical arguments, see _canonical_args

    def __post_init__(self) -> None:
        """Validate a directly constructed spec and fill in default arguments.

        Raises:
            GradprobeError: If the name is unknown or the arguments are invalid.
        """
        if self.name not in _ENTRIES:
            raise unknown_name_error("InitSpec.name", self.name, self.name, "an initialiser", INITS)
        args = tuple(float(a) for a in self.args)
        text = format_spec(self.name, args)
        object.__setattr__(self, "args", _canonical_args(self.name, args, text, "InitSpec"))

    def __str__(self) -> str:
        """Render the canonical spec string, e.g. ``normal:0:0.1``."""
        return format_spec(self.name, self.args)

    @property
    def legacy(self) -> bool:
        """Whether this init draws from a NumPy legacy stream (``cs231n``) instead of torch."""
        return _ENTRIES[self.name].legacy

    def apply(self, weight: Tensor, generator: torch.Generator | None = None,
              stream: np.random.RandomState | None = None) -> None:
        """Initialise a weight in place (under ``no_grad``).

        Args:
            weight: Weight of shape ``(fan_out, fan_in)``; fan-based inits need >= 2 dims.
            generator: Source of randomness; None uses torch's global generator.
            stream: NumPy legacy stream a ``legacy`` init draws ``fan_in * fan_out`` normals from.

        Raises:
            GradprobeError: A legacy init without a ``stream``.
        """
        with torch.no_grad():
            if self.legacy and stream is not None:
                fan_out, fan_in = weight.shape
                drawn = self.args[0] * stream.randn(fan_in, fan_out)  # (fan_in, fan_out)
                weight.copy_(torch.from_numpy(drawn.T))
            else:
                _ENTRIES[self.name].apply(weight, self.args, generator)

    def weight_variance(self, fan_in: int, fan_out: int) -> float:
        """Variance of one weight entry, ``Var(W_ij)``, for a ``(fan_out, fan_in)`` matrix.

        For orthogonal this is the exact mean square ``GAIN^2 / max(fan_in, fan_out)``; for
        ``uniform:A:B`` and ``normal:MEAN:STD`` it is the variance about the (maybe non-zero) mean.

        Args:
            fan_in: Input features, >= 1.
            fan_out: Output features, >= 1.

        Returns:
            ``Var(W_ij)``; multiply by ``fan_in`` for ``sigma_w^2``.

        Raises:
            GradprobeError: If a fan is not a positive integer.
        """
        for label, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
            if isinstance(fan, bool) or not isinstance(fan, int) or fan < 1:
                raise GradprobeError(
                    f"InitSpec.weight_variance.{label}: {fan!r} is not a fan; "
                    "allowed: integers >= 1"
                )
        return float(_ENTRIES[self.name].variance(self.args, fan_in, fan_out))


def init_spec(text: str, field: str = "model.init") -> InitSpec:
    """Parse and validate an initialiser spec string.

    Args:
        text: e.g. ``"normal:0.1"``, ``"uniform(-1, 1)"``, ``"kaiming_normal"``, ``"orthogonal:2"``.
        field: Config field the text came from, used in error messages.

    Returns:
        The validated spec with canonical name and arguments.

    Raises:
        GradprobeError: On malformed text, an unknown name, a wrong argument count or an
            out-of-range argument (STD <= 0, A >= B, GAIN <= 0, ...).
    """
    name, args = parse_spec(text, field)
    name = _ALIASES.get(name, name)
    if name not in _ENTRIES:
        raise unknown_name_error(field, text, name, "an initialiser", (*INITS, *_ALIASES))
    return InitSpec(name, _canonical_args(name, args, text, field))

"""Parse spec strings such as ``leaky_relu:0.1``, ``normal:0:0.1`` or ``orthogonal(1.5)``.

Activations and initialisers are named by a spec string because sweeps pass them in
comma-separated grids (``init=normal:1,glorot_uniform``); a colon keeps each spec free of commas.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence

from ..errors import GradprobeError

__all__ = ["bad_arg_error", "check_arity", "format_spec", "parse_spec", "unknown_name_error"]

_EXPECTED = "expected NAME, NAME:ARG[:ARG] or NAME(ARG, ARG)"
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_CALL = re.compile(r"(?P<name>[^():]*)\((?P<args>[^()]*)\)\Z")


def _malformed(field: str, text: object, why: str) -> GradprobeError:
    """Build the one-line error for text that is not a spec at all.

    Args:
        field: Config field the text came from, e.g. ``model.init``.
        text: The offending value as given.
        why: Short reason, e.g. ``empty argument 2``.

    Returns:
        The error to raise.
    """
    return GradprobeError(f"{field}: {text!r} is not a valid spec ({why}); {_EXPECTED}")


def _number(field: str, text: str, raw: str, index: int) -> float:
    """Convert one argument to a finite float.

    Args:
        field: Config field, for the message.
        text: Whole spec text, for the message.
        raw: The argument text.
        index: 1-based position of the argument, for the message.

    Returns:
        The argument as a float.

    Raises:
        GradprobeError: If the argument is empty, not a number, or not finite.
    """
    raw = raw.strip()
    if not raw:
        raise _malformed(field, text, f"empty argument {index}")
    try:
        value = float(raw)
    except ValueError:
        raise _malformed(field, text, f"argument {index} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _malformed(field, text, f"argument {index} {raw!r} is not finite")
    return value


def parse_spec(text: str, field: str) -> tuple[str, tuple[float, ...]]:
    """Split a spec string into a normalised name and its numeric arguments.

    The name is lower-cased with ``-`` turned into ``_``; ``name``, ``name:a:b``, ``name()`` and
    ``name(a, b)`` are accepted. Whether the name exists is for the caller's registry to decide.

    Args:
        text: Spec string, e.g. ``"Leaky-ReLU:0.1"`` or ``"normal(0, 0.1)"``.
        field: Config field the text came from, used in error messages.

    Returns:
        ``(name, args)``, e.g. ``("leaky_relu", (0.1,))``.

    Raises:
        GradprobeError: If the text is not a string, is empty, has a malformed name or bracket, or
            an argument that is not a finite number.
    """
    if not isinstance(text, str):
        raise GradprobeError(f"{field}: {text!r} is not a spec string; {_EXPECTED}")
    stripped = text.strip()
    if not stripped:
        raise _malformed(field, text, "empty")
    call = _CALL.match(stripped)
    if call is not None:
        name, rest = call.group("name"), call.group("args")
        raw_args = rest.split(",") if rest.strip() else []
    elif any(c in stripped for c in "(),"):
        raise _malformed(field, text, "unbalanced brackets or stray comma")
    else:
        name, *raw_args = stripped.split(":")
    name = name.strip().lower().replace("-", "_")
    if not _NAME.match(name):
        raise _malformed(field, text, f"name {name!r} must be letters, digits and _")
    args = tuple(_number(field, text, raw, i) for i, raw in enumerate(raw_args, start=1))
    return name, args


def _format_number(value: float) -> str:
    """Render a spec argument without a trailing ``.0`` and without losing precision.

    Args:
        value: Finite float.

    Returns:
        ``"2"`` for 2.0, ``"0.01"`` for 0.01.
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_spec(name: str, args: Sequence[float]) -> str:
    """Render the canonical colon form of a spec; inverse of :func:`parse_spec`.

    Args:
        name: Normalised name.
        args: Numeric arguments.

    Returns:
        e.g. ``"normal:0:0.1"``.
    """
    return ":".join([name, *(_format_number(a) for a in args)])


def unknown_name_error(
    field: str, text: str, name: str, kind: str, allowed: Sequence[str]
) -> GradprobeError:
    """Build the error for a name missing from a registry, with a did-you-mean suggestion.

    Args:
        field: Config field, e.g. ``model.activation``.
        text: Whole spec text as given.
        name: Normalised name that was not found.
        kind: What the registry holds, with article, e.g. ``"an activation"``.
        allowed: Every accepted name.

    Returns:
        The GradprobeError to raise.
    """
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return GradprobeError(
        f"{field}: {text.strip()!r} is not {kind}; allowed: {', '.join(allowed)}{hint}"
    )


def bad_arg_error(field: str, text: str, what: str, allowed: str) -> GradprobeError:
    """Build the error for an argument with a value outside its range.

    Args:
        field: Config field.
        text: Whole spec text as given.
        what: The offending argument, e.g. ``"alpha=-1"``.
        allowed: What is allowed, e.g. ``"alpha >= 0, e.g. leaky_relu:0.01"``.

    Returns:
        The GradprobeError to raise.
    """
    return GradprobeError(f"{field}: {text.strip()!r} has {what}; allowed: {allowed}")


def check_arity(
    field: str, text: str, name: str, args: Sequence[float], forms: Sequence[Sequence[str]]
) -> None:
    """Check the argument count against the accepted forms of a name.

    Args:
        field: Config field.
        text: Whole spec text as given.
        name: Normalised name.
        args: Parsed arguments.
        forms: Accepted argument-name tuples, e.g. ``[(), ("STD",), ("MEAN", "STD")]``.

    Raises:
        GradprobeError: If no form takes ``len(args)`` arguments.
    """
    if any(len(form) == len(args) for form in forms):
        return
    usage = " or ".join(format_spec(name, []) + "".join(f":{p}" for p in form) for form in forms)
    raise GradprobeError(
        f"{field}: {text.strip()!r} has {len(args)} argument(s); allowed: {usage}"
    )

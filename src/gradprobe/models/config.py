"""Validated MLP configuration: widths, activation, initialisers."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from .activations import activation_spec
from .inits import init_spec

__all__ = ["DEFAULT_HIDDEN", "ModelConfig"]

#: Hidden widths used when neither ``hidden`` nor ``depth`` + ``width`` is given.
DEFAULT_HIDDEN: tuple[int, ...] = (5, 5, 5, 5)


def _check_count(field: str, value: int, what: str) -> None:
    """Reject a width or depth below 1 (pydantic has already made it an int).

    Args:
        field: Config field, e.g. ``model.depth``.
        value: The value.
        what: Noun for the message, e.g. ``"depth"``.

    Raises:
        ValueError: If ``value < 1``.
    """
    if value < 1:
        raise ValueError(f"{field}: {value!r} is not a valid {what}; allowed: integers >= 1")


class ModelConfig(BaseModel):
    """MLP architecture and initialisation; give ``hidden`` or ``depth`` + ``width``, not both."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] | None = None  # explicit hidden widths, e.g. [64, 32]; None -> depth x width
    depth: int | None = None  # number of hidden layers (with width; shorthand for hidden)
    width: int | None = None  # width of every hidden layer (with depth)
    activation: str = "relu"  # activation spec, e.g. "tanh", "leaky_relu:0.1", "maxout:2"
    init: str = "glorot_uniform"  # weight init spec, e.g. "normal:0.1", "he_normal"
    bias_init: float = 0.0  # every bias is set to this constant
    output_init: str | None = None  # init spec of the output layer; None = same as init

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: list[int] | None) -> list[int] | None:
        """Reject an empty list or a width below 1."""
        if value is None:
            return value
        if not value:
            raise ValueError("model.hidden: [] has no layers; allowed: a non-empty list of widths")
        for index, width in enumerate(value):
            if width < 1:
                raise ValueError(
                    f"model.hidden: {value!r} has width {width} at index {index}; "
                    f"allowed: integers >= 1"
                )
        return value

    @field_validator("depth", "width")
    @classmethod
    def _check_depth_width(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Reject depth or width below 1."""
        name = str(info.field_name)
        if value is not None:
            _check_count(f"model.{name}", value, name)
        return value

    @field_validator("activation")
    @classmethod
    def _check_activation(cls, value: str) -> str:
        """Validate the activation spec string."""
        activation_spec(value, "model.activation")  # GradprobeError is a ValueError
        return value

    @field_validator("init")
    @classmethod
    def _check_init(cls, value: str) -> str:
        """Validate the weight init spec string."""
        init_spec(value, "model.init")
        return value

    @field_validator("output_init")
    @classmethod
    def _check_output_init(cls, value: str | None) -> str | None:
        """Validate the output-layer init spec string."""
        if value is not None:
            init_spec(value, "model.output_init")
        return value

    @field_validator("bias_init")
    @classmethod
    def _check_bias_init(cls, value: float) -> float:
        """Reject NaN and infinite bias values."""
        if not math.isfinite(value):
            raise ValueError(f"model.bias_init: {value!r} is not finite; allowed: finite numbers")
        return value

    @model_validator(mode="after")
    def _check_shape_fields(self) -> ModelConfig:
        """Require hidden, or depth and width together, or neither."""
        if self.hidden is not None and (self.depth is not None or self.width is not None):
            raise ValueError(
                f"model.hidden: {self.hidden!r} given together with model.depth={self.depth!r}, "
                f"model.width={self.width!r}; allowed: hidden, or depth and width, not both"
            )
        if (self.depth is None) != (self.width is None):
            missing = "width" if self.width is None else "depth"
            raise ValueError(
                f"model.{missing}: None while model.depth={self.depth!r}, "
                f"model.width={self.width!r}; allowed: depth and width together (or hidden)"
            )
        return self

    def widths(self) -> list[int]:
        """Hidden-layer widths in depth order.

        Returns:
            ``hidden``, or ``[width] * depth``, or ``[5, 5, 5, 5]`` if neither is given.
        """
        if self.hidden is not None:
            return list(self.hidden)
        if self.depth is not None and self.width is not None:
            return [self.width] * self.depth
        return list(DEFAULT_HIDDEN)

"""Plain MLP ``Linear, act, Linear, act, ..., Linear`` with spec-string activation and init."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import GradprobeError
from .activations import activation_spec
from .config import ModelConfig
from .inits import init_spec

__all__ = ["MLP", "build_mlp"]

_LOG = logging.getLogger(__name__)


def _check_features(field: str, value: int) -> None:
    """Reject a feature count that is not a positive integer.

    Args:
        field: Argument name, e.g. ``in_features``.
        value: The value.

    Raises:
        GradprobeError: If ``value`` is not an integer >= 1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradprobeError(f"build_mlp.{field}: {value!r} is not a size; allowed: integers >= 1")


class MLP(nn.Module):
    """Multilayer perceptron whose last Linear emits logits (no output activation).

    ``layers`` is ``Linear, act, ..., Linear``: weights are ``layers.{2i}.weight`` and activation
    outputs are modules ``layers.{2i+1}``. For maxout the Linear before it emits ``width * k``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cfg: ModelConfig,
        generator: torch.Generator | None = None,
        stream: np.random.RandomState | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Build and initialise the layers; deterministic given the generator's seed.

        Args:
            in_features: Input features, >= 1.
            out_features: Output features (logits), >= 1.
            cfg: Architecture, activation and init specs.
            generator: Source of randomness, e.g. ``torch.Generator().manual_seed(0)``; None
                uses torch's global generator.
            stream: NumPy legacy stream for ``cs231n`` inits, consumed layer by layer.
            dtype: Parameter dtype; weights are drawn in it (float64 keeps a NumPy draw exact).

        Raises:
            GradprobeError: If a size is not a positive integer or a spec string is invalid.
        """
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.widths = cfg.widths()
        self.activation = activation_spec(cfg.activation)
        multiplier = self.activation.width_multiplier
        layers: list[nn.Module] = []
        fan_in = in_features
        for width in self.widths:
            # skip_init builds on the meta device: no global RNG is consumed, _initialise sets all
            layers.append(nn.utils.skip_init(nn.Linear, fan_in, width * multiplier, dtype=dtype))
            layers.append(self.activation.module())
            fan_in = width
        layers.append(nn.utils.skip_init(nn.Linear, fan_in, out_features, dtype=dtype))
        self.layers = nn.Sequential(*layers)
        self._initialise(cfg, generator, stream)

    def _initialise(self, cfg: ModelConfig, generator: torch.Generator | None,
                    stream: np.random.RandomState | None) -> None:
        """Apply the init to every weight (output_init to the last) and bias_init to every bias.

        Args:
            cfg: Supplies init, output_init and bias_init.
            generator: Source of randomness, consumed layer by layer from the first.
            stream: NumPy legacy stream of ``cs231n`` inits, consumed layer by layer from the first.
        """
        hidden_init = init_spec(cfg.init)
        output_init = hidden_init
        if cfg.output_init is not None:
            output_init = init_spec(cfg.output_init, "model.output_init")
        names = self.weight_layers()
        for name in names:
            spec = output_init if name == names[-1] else hidden_init
            spec.apply(self.get_parameter(name), generator, stream)
            with torch.no_grad():
                self.get_parameter(name.removesuffix("weight") + "bias").fill_(cfg.bias_init)
        _LOG.debug(
            "built MLP %s -> %s -> %s, activation %s, init %s, output init %s",
            self.in_features, self.widths, self.out_features, self.activation, hidden_init,
            output_init,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map inputs to logits.

        Args:
            x: Input of shape ``(B, in_features)``.

        Returns:
            Logits of shape ``(B, out_features)``.
        """
        return self.layers(x)  # (B, out_features)

    def weight_layers(self) -> list[str]:
        """List the parameter names of the weight matrices, first layer to output layer.

        Returns:
            e.g. ``["layers.0.weight", "layers.2.weight", "layers.4.weight"]``.
        """
        return [f"layers.{i}.weight" for i in range(0, len(self.layers), 2)]

    def activation_layers(self) -> list[str]:
        """List the module names of the hidden activations, first to last.

        Returns:
            e.g. ``["layers.1", "layers.3"]``.
        """
        return [f"layers.{i}" for i in range(1, len(self.layers), 2)]


def build_mlp(
    in_features: int,
    out_features: int,
    cfg: ModelConfig,
    generator: torch.Generator | None = None,
    stream: np.random.RandomState | None = None,
    dtype: torch.dtype = torch.float32,
) -> MLP:
    """Build and initialise an MLP from a config; deterministic given the generator's seed.

    Args:
        in_features: Input features, >= 1.
        out_features: Output features (logits), >= 1.
        cfg: Architecture, activation and init specs.
        generator: Source of randomness, e.g. ``torch.Generator().manual_seed(0)``; None uses
            torch's global generator.
        stream: NumPy legacy stream that ``cs231n`` inits draw from, layer by layer.
        dtype: Parameter dtype.

    Returns:
        The initialised MLP (``dtype``, CPU), layers ``Linear, act, ..., Linear``.

    Raises:
        GradprobeError: If a size is not a positive integer or a spec string is invalid.
    """
    return MLP(in_features, out_features, cfg, generator, stream, dtype)

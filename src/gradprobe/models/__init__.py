"""MLP models built from spec strings: activations, initialisers, config."""

from .activations import ACTIVATIONS, ActivationSpec, Maxout, activation_spec
from .config import ModelConfig
from .inits import INITS, InitSpec, init_spec
from .mlp import MLP, build_mlp
from .spec import parse_spec

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MLP",
    "ActivationSpec",
    "InitSpec",
    "Maxout",
    "ModelConfig",
    "activation_spec",
    "build_mlp",
    "init_spec",
    "parse_spec",
]

"""The activation registry: module, function, derivative, probe family, ensemble kernel, mean-field kinks."""

from gradprobe.activations.family import DeadRegion, Family
from gradprobe.activations.modules import Erf, Maxout
from gradprobe.activations.registry import ALIASES, REGISTRY, Activation, Kernel, Param, families

__all__ = ["ALIASES", "REGISTRY", "Activation", "DeadRegion", "Erf", "Family", "Kernel", "Maxout", "Param", "families"]

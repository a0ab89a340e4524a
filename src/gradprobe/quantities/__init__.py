"""Statistics computed on the model's device; torch only, no I/O and no plotting."""

from gradprobe.quantities.activation_stats import FAMILIES, ActivationStats, Family, family_of
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.histograms import histogram, unpack_histogram
from gradprobe.quantities.tensor_stats import TensorStats, tensor_stats
from gradprobe.quantities.update_ratio import UpdateRatio, update_norms

__all__ = [
    "FAMILIES",
    "ActivationStats",
    "Family",
    "Inputs",
    "Quantity",
    "TensorStats",
    "UpdateRatio",
    "family_of",
    "histogram",
    "tensor_stats",
    "unpack_histogram",
    "update_norms",
]

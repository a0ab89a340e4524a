"""Statistics computed on the model's device; torch only, no I/O and no plotting."""

from gradprobe.quantities.activation_stats import FAMILIES, ActivationStats, Family, family_of
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.histograms import histogram, unpack_histogram
from gradprobe.quantities.step_stats import StepStats, step_row
from gradprobe.quantities.tensor_stats import TensorStats, merge_moments, tensor_stats
from gradprobe.quantities.update_ratio import UpdateRatio, update_norms

__all__ = [
    "FAMILIES",
    "ActivationStats",
    "Family",
    "Inputs",
    "Quantity",
    "StepStats",
    "TensorStats",
    "UpdateRatio",
    "family_of",
    "histogram",
    "merge_moments",
    "step_row",
    "tensor_stats",
    "unpack_histogram",
    "update_norms",
]

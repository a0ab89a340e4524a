"""Statistics computed on the model's device; torch only, no I/O and no plotting."""

from gradprobe.quantities.activation_stats import FAMILIES, ActivationStats, Family, family_of
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.curvature import top_hessian_eigenvalue
from gradprobe.quantities.histograms import histogram, unpack_histogram, unpack_histograms
from gradprobe.quantities.noise import (
    NoiseScale,
    gradient_snr,
    noise_scale_from_microbatches,
    per_example_grads,
    simple_noise_scale,
)
from gradprobe.quantities.step_stats import StepStats, step_row
from gradprobe.quantities.tensor_stats import TensorStats, merge_moments, tensor_stats
from gradprobe.quantities.update_ratio import UpdateRatio, update_norms

__all__ = [
    "FAMILIES",
    "ActivationStats",
    "Family",
    "Inputs",
    "NoiseScale",
    "Quantity",
    "StepStats",
    "TensorStats",
    "UpdateRatio",
    "family_of",
    "gradient_snr",
    "histogram",
    "merge_moments",
    "noise_scale_from_microbatches",
    "per_example_grads",
    "simple_noise_scale",
    "step_row",
    "tensor_stats",
    "top_hessian_eigenvalue",
    "unpack_histogram",
    "unpack_histograms",
    "update_norms",
]

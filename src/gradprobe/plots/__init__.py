"""Records -> matplotlib Figures; never touches torch hooks or autograd."""

from gradprobe.plots.activations import activation_curves, activation_overlay, derivative_decay
from gradprobe.plots.boundary import BoundaryGrid, decision_boundary
from gradprobe.plots.coord_check import coord_check
from gradprobe.plots.curves import grad_over_time, loss_accuracy
from gradprobe.plots.epochs import grad_mean_std_loss, weight_stats
from gradprobe.plots.gradient_flow import gradient_flow
from gradprobe.plots.health import unit_health
from gradprobe.plots.heatmap import grad_heatmap
from gradprobe.plots.histograms import histogram_ridges
from gradprobe.plots.loss_scale import loss_scale
from gradprobe.plots.second_order import second_order
from gradprobe.plots.style import arm_colors, order_layers
from gradprobe.plots.sweep import accuracy_curve, depth_curve, heatmap
from gradprobe.plots.theory import chi_vs_sigma, predicted_vs_measured
from gradprobe.plots.unit_death import unit_death

__all__ = [
    "BoundaryGrid",
    "accuracy_curve",
    "chi_vs_sigma",
    "coord_check",
    "depth_curve",
    "heatmap",
    "predicted_vs_measured",
    "activation_curves",
    "activation_overlay",
    "arm_colors",
    "decision_boundary",
    "derivative_decay",
    "grad_heatmap",
    "grad_mean_std_loss",
    "grad_over_time",
    "gradient_flow",
    "histogram_ridges",
    "loss_accuracy",
    "order_layers",
    "second_order",
    "loss_scale",
    "unit_death",
    "unit_health",
    "weight_stats",
]

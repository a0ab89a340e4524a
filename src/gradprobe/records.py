"""The one record schema shared by the probe, the store, diagnosis and plots.

A statistic is a tidy row ``step, layer, tensor, kind, stat, value``:

* ``step``: index of the optimizer step the values belong to (0 = the first
  update; weights at ``step`` are the weights *before* that update). A step a
  ``GradScaler`` skipped (inf/NaN gradients) counts as a step without an update:
  it records only its ``step`` row (``skipped`` = 1), no other kind.
* ``layer``: module path, e.g. ``layers.3`` (``""`` for the root module).
* ``tensor``: ``weight``/``bias``/... for parameters, ``output`` for module outputs,
  ``optimizer`` for kind ``step``.
* ``kind``: one of :data:`KINDS`.
* ``stat``: one of the constants below.
"""

from __future__ import annotations

from typing import Final

# Kinds of tensor a statistic describes.
# dL/dparam, read at optimizer-step time. The trainer backpropagates the data loss only and adds the
# L2 term's l2 * W after the probe has read it, so its grad rows are dL_data/dW (run summary
# "grad_of": "data_loss"); with the Probe in your own loop they are of whatever loss you backpropagate.
GRAD: Final = "grad"
WEIGHT: Final = "weight"  # the parameter itself
ACTIVATION: Final = "activation"  # a module's forward output
DELTA: Final = "delta"  # dL/d(module output), the back-propagated error (unscaled under a GradScaler)
# the optimizer step itself (layer "", tensor "optimizer"): skipped, loss_scale; on a skipped step also one
# first_nonfinite_grad row at the culprit parameter's own layer and tensor
STEP: Final = "step"
CURVATURE: Final = "curvature"  # top Hessian eigenvalue of the loss (layer "", tensor "hessian"; second_order.py)
SNR: Final = "snr"  # per-parameter gradient signal-to-noise from per-example gradients (second_order.py)
COORD: Final = "coord"  # width-scaling check (coord_check.py): activation and update scale per layer and width
# Simple noise scale (McCandlish et al. 2018) from two batch sizes (noise_scale.py): per parameter and layer ""
# (tensor "model") for the whole model; micro-batches of one step or DDP ranks' local vs all-reduced gradients.
NOISE: Final = "noise"
KINDS: Final = (GRAD, WEIGHT, ACTIVATION, DELTA, STEP, CURVATURE, SNR, COORD, NOISE)
MODEL_TENSOR: Final = "model"  # the tensor name of whole-model rows (layer "") of kind noise
STEP_TENSOR: Final = "optimizer"  # the tensor name of kind-step rows

# Statistic names.
MEAN: Final = "mean"
MEAN_ABS: Final = "mean_abs"
# Unbiased, ddof 1 (divides by n - 1); 0 for a single element. NumPy's x.std() (the seeds' figures)
# is ddof 0: that is this value times sqrt((n - 1) / n), e.g. 0.98x for a 5 x 5 weight.
STD: Final = "std"
NORM: Final = "norm"  # L2 norm of the flattened tensor
MAX_ABS: Final = "max_abs"
ZERO_FRAC: Final = "zero_frac"  # fraction of entries exactly 0
NONFINITE: Final = "nonfinite"  # count of NaN/Inf entries
# sum|x| / sum(shape): CS231n's magnitude heuristic; for kind grad, as CS231n, of the data-loss gradient
# (before the L2 term's l2 * W is added; see GRAD).
SUM_ABS_PER_SHAPE: Final = "sum_abs_per_shape"
UPDATE_RATIO: Final = "update_ratio"  # ||w_after - w_before|| / ||w_before|| (kind weight)
# Units whose local derivative f'(x) is ~0 for every example of the step's batch (all calls of the module
# in the step pooled): exactly 0 on ReLU's x <= 0, the plateaus of ReLU6/Hardtanh/Hardsigmoid and
# Hardswish's x < -3; |f'(x)| < 1e-3 (quantities.activation_stats.DEAD_TOLERANCE) for ELU/SELU/CELU/GELU/
# SiLU/Mish/Softplus. Activations without such a region (LeakyReLU/PReLU/RReLU, sigmoid, tanh) record none.
DEAD_FRAC: Final = "dead_frac"
SATURATED_FRAC: Final = "saturated_frac"  # outputs within 1% of an asymptote (bounded activations)
NEGATIVE_FRAC: Final = "negative_frac"  # entries with negative input (leaky units: LeakyReLU/PReLU/RReLU)
SKIPPED: Final = "skipped"  # kind step: 1 if the GradScaler skipped the update (inf/NaN gradients), else 0
LOSS_SCALE: Final = "loss_scale"  # kind step: the GradScaler's scale in effect for the step's backward
# kind step, on a step the GradScaler skipped: one row at the parameter nearest the output (first in backward
# order) whose unscaled gradient holds NaN/Inf; the value is its number of non-finite entries
FIRST_NONFINITE_GRAD: Final = "first_nonfinite_grad"
B_SIMPLE: Final = "b_simple"  # kind noise: tr(Sigma) / |G|^2, the simple noise scale in examples
GRAD_SQ_SMALL: Final = "grad_sq_small"  # kind noise: mean |G_small|^2 over the small batches (b_small examples)
GRAD_SQ_BIG: Final = "grad_sq_big"  # kind noise: |G_big|^2 of the big batch (b_big examples)
GRAD_SQ: Final = "grad_sq"  # kind noise: unbiased estimate of |G|^2, the true gradient's squared norm
TRACE_SIGMA: Final = "trace_sigma"  # kind noise: unbiased estimate of tr(Sigma), per-example gradient noise
B_SMALL: Final = "b_small"  # kind noise: examples behind each small-batch gradient
B_BIG: Final = "b_big"  # kind noise: examples behind the big-batch gradient
NOISE_STATS: Final = (B_SIMPLE, GRAD_SQ, TRACE_SIGMA, GRAD_SQ_SMALL, GRAD_SQ_BIG, B_SMALL, B_BIG)
TOP_HESSIAN_EIG: Final = "top_hessian_eig"  # kind curvature: signed eigenvalue of largest magnitude
POWER_ITERS: Final = "power_iters"  # kind curvature: Hessian-vector products the power iteration used
HESSIAN_TENSOR: Final = "hessian"  # the tensor name of kind-curvature rows (layer "": the whole model)
GRAD_SNR: Final = "grad_snr"  # kind snr: ||mean g_i||^2 / mean ||g_i - mean g_i||^2 over per-example gradients
ACT_RMS: Final = "act_rms"  # kind coord: RMS of a module's output after `step` updates (coord_check.py)
ACT_DELTA_RMS: Final = "act_delta_rms"  # kind coord: RMS of (output after `step` updates - output at init)
UPD_RMS: Final = "upd_rms"  # kind coord: RMS of the entries of the weight update of `step`

TENSOR_STATS: Final = (MEAN, MEAN_ABS, STD, NORM, MAX_ABS, ZERO_FRAC, NONFINITE, SUM_ABS_PER_SHAPE)
DEFAULT_GRAD_STATS: Final = (MEAN, MEAN_ABS, STD, NORM, MAX_ABS, ZERO_FRAC, NONFINITE)
DEFAULT_WEIGHT_STATS: Final = (MEAN, STD, NORM, UPDATE_RATIO)
DEFAULT_ACTIVATION_STATS: Final = (MEAN, STD, DEAD_FRAC, SATURATED_FRAC, NEGATIVE_FRAC)
DEFAULT_DELTA_STATS: Final = (MEAN_ABS, STD, NORM)
ALL_STATS: Final = TENSOR_STATS + (UPDATE_RATIO, DEAD_FRAC, SATURATED_FRAC, NEGATIVE_FRAC)
STEP_STATS: Final = (SKIPPED, LOSS_SCALE)

# Columns of the tidy frames.
STAT_COLUMNS: Final = ("step", "layer", "tensor", "kind", "stat", "value")
HIST_COLUMNS: Final = ("step", "layer", "tensor", "kind", "edges", "counts")
METRIC_COLUMNS: Final = ("step", "epoch", "split", "metric", "value")

# Metric names (per evaluation, kind-free).
LOSS: Final = "loss"
ACCURACY: Final = "accuracy"
TRAIN: Final = "train"
TEST: Final = "test"

# Run statuses.
RUNNING: Final = "running"
FINISHED: Final = "finished"
FAILED: Final = "failed"
INTERRUPTED: Final = "interrupted"
DIVERGED: Final = "diverged"
STATUSES: Final = (RUNNING, FINISHED, FAILED, INTERRUPTED, DIVERGED)

__all__ = [name for name in dir() if name.isupper()]

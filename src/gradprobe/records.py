"""The one record schema shared by the probe, the store, diagnosis and plots.

A statistic is a tidy row ``step, layer, tensor, kind, stat, value``:

* ``step``: index of the optimizer step the values belong to (0 = the first
  update; weights at ``step`` are the weights *before* that update).
* ``layer``: module path, e.g. ``layers.3`` (``""`` for the root module).
* ``tensor``: ``weight``/``bias``/... for parameters, ``output`` for module outputs.
* ``kind``: one of :data:`KINDS`.
* ``stat``: one of the constants below.
"""

from __future__ import annotations

from typing import Final

# Kinds of tensor a statistic describes.
GRAD: Final = "grad"  # dL/dparam, read at optimizer-step time
WEIGHT: Final = "weight"  # the parameter itself
ACTIVATION: Final = "activation"  # a module's forward output
DELTA: Final = "delta"  # dL/d(module output), the back-propagated error
KINDS: Final = (GRAD, WEIGHT, ACTIVATION, DELTA)

# Statistic names.
MEAN: Final = "mean"
MEAN_ABS: Final = "mean_abs"
STD: Final = "std"  # unbiased (n - 1); 0 for a single element
NORM: Final = "norm"  # L2 norm of the flattened tensor
MAX_ABS: Final = "max_abs"
ZERO_FRAC: Final = "zero_frac"  # fraction of entries exactly 0
NONFINITE: Final = "nonfinite"  # count of NaN/Inf entries
SUM_ABS_PER_SHAPE: Final = "sum_abs_per_shape"  # sum|x| / sum(shape): CS231n's magnitude heuristic
UPDATE_RATIO: Final = "update_ratio"  # ||w_after - w_before|| / ||w_before|| (kind weight)
DEAD_FRAC: Final = "dead_frac"  # units <= 0 for every example of the batch (ReLU family)
SATURATED_FRAC: Final = "saturated_frac"  # outputs within 1% of an asymptote (bounded activations)

TENSOR_STATS: Final = (MEAN, MEAN_ABS, STD, NORM, MAX_ABS, ZERO_FRAC, NONFINITE, SUM_ABS_PER_SHAPE)
DEFAULT_GRAD_STATS: Final = (MEAN, MEAN_ABS, STD, NORM, MAX_ABS, ZERO_FRAC, NONFINITE)
DEFAULT_WEIGHT_STATS: Final = (MEAN, STD, NORM, UPDATE_RATIO)
DEFAULT_ACTIVATION_STATS: Final = (MEAN, STD, DEAD_FRAC, SATURATED_FRAC)
DEFAULT_DELTA_STATS: Final = (MEAN_ABS, STD, NORM)
ALL_STATS: Final = TENSOR_STATS + (UPDATE_RATIO, DEAD_FRAC, SATURATED_FRAC)

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

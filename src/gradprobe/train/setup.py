"""Turn a RunConfig into torch objects: model, optimizer, objective and the probe's cadences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gradprobe.data.config import legacy_draws
from gradprobe.data.datasets import Dataset
from gradprobe.errors import GradprobeError
from gradprobe.models.activations import activation_spec
from gradprobe.models.inits import init_spec
from gradprobe.models.mlp import MLP, build_mlp
from gradprobe.probe import ProbeOptions
from gradprobe.schedules import Schedule as StepSchedule
from gradprobe.schedules import cadence_schedule, never
from gradprobe.train.config import Cadence, OptimizerConfig, RecordCadence, RecordConfig, RunConfig


@dataclass(frozen=True)
class Schedule:
    """Lengths of a run in optimizer steps."""

    steps_per_epoch: int
    total_steps: int

    def cadence(self, value: Cadence) -> int:
        """Steps between evaluations: ``value``, or the steps of one epoch for ``"epoch"``."""
        return self.steps_per_epoch if value == "epoch" else int(value)

    def recording(self, value: RecordCadence | None) -> StepSchedule:
        """The schedule of a record cadence over this run's steps ``0 .. total_steps - 1``; None: never."""
        if value is None:
            return never
        return cadence_schedule(value, self.steps_per_epoch, self.total_steps - 1)


def schedule_for(cfg: RunConfig, n_train: int) -> Schedule:
    """Steps per epoch and in total (epochs x batches, or the given iterations)."""
    batch = cfg.train.batch_size or n_train
    per_epoch = math.ceil(n_train / batch)
    total = cfg.train.iterations or (cfg.train.epochs or 0) * per_epoch
    return Schedule(per_epoch, total)


def loss_kind(cfg: RunConfig, data: Dataset) -> str:
    """``bce`` (one logit) or ``cross_entropy`` (one logit per class)."""
    kind = cfg.train.loss
    if kind == "auto":
        kind = "bce" if data.n_classes == 2 else "cross_entropy"
    if kind == "bce" and data.n_classes != 2:
        raise GradprobeError(
            f"train.loss: 'bce' needs 2 classes but data set {data.name!r} has {data.n_classes}; "
            "use cross_entropy"
        )
    return kind


def dtype_of(cfg: RunConfig) -> torch.dtype:
    """The torch dtype of the run's parameters and inputs (``train.dtype``)."""
    return torch.float64 if cfg.train.dtype == "float64" else torch.float32


def legacy_stream(cfg: RunConfig, shapes: list[tuple[int, int]]) -> np.random.RandomState | None:
    """NumPy's legacy stream ``RandomState(seed)`` where this arm's ``cs231n`` weights start, or None.

    The CS231n notebooks call ``np.random.seed(seed)`` once, draw the data, then each network's
    weights in turn; so this skips the data's draws and those of the ``arm_index`` earlier arms
    (which ``load_experiment`` checks draw the same ``shapes``, (fan_out, fan_in) each).
    """
    hidden = init_spec(cfg.model.init)
    output = init_spec(cfg.model.output_init) if cfg.model.output_init is not None else hidden
    specs = [hidden] * (len(shapes) - 1) + [output]
    per_arm = sum(o * i for (o, i), spec in zip(shapes, specs) if spec.legacy)
    if not per_arm:
        return None
    stream = np.random.RandomState(cfg.seed)
    stream.standard_normal(legacy_draws(cfg.data) + cfg.arm_index * per_arm)  # gauss pairs carry over
    return stream


def build_model(cfg: RunConfig, data: Dataset, loss: str) -> MLP:
    """The MLP for this run, initialised from the run's seed (torch generator or, for cs231n, NumPy's stream)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    out = 1 if loss == "bce" else data.n_classes
    widths, k = cfg.model.widths(), activation_spec(cfg.model.activation).width_multiplier
    fans = list(zip([data.n_features, *widths], [w * k for w in widths] + [out]))  # (fan_in, fan_out), maxout: k x
    shapes = [(o, i) for i, o in fans]
    return build_mlp(data.n_features, out, cfg.model, generator=generator, stream=legacy_stream(cfg, shapes),
                     dtype=dtype_of(cfg)).to(cfg.device)


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD, Adam (AdamW when decoupled weight decay is set) or RMSprop."""
    params = model.parameters()
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.weight_decay > 0:
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def objective(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean data loss: BCE on one logit or softmax cross-entropy."""
    if loss == "bce":
        return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), y.to(logits.dtype))
    return nn.functional.cross_entropy(logits, y)


def correct(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Number of correct predictions, as a 0-d tensor."""
    pred = (logits.squeeze(-1) > 0).long() if loss == "bce" else logits.argmax(-1)
    return (pred == y).sum()


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The parameters the L2 term covers: weight matrices (>= 2 dims), not biases."""
    return [p for p in model.parameters() if p.dim() >= 2]


def l2_penalty(weights: list[torch.Tensor], l2: float) -> torch.Tensor | float:
    """0.5 * l2 * sum(W^2) over ``weights`` (see :func:`weight_matrices`), as in CS231n."""
    if l2 == 0:
        return 0.0
    return 0.5 * l2 * sum((p * p).sum() for p in weights)


def probe_options(cfg: RecordConfig) -> ProbeOptions:
    """ProbeOptions from the record section; unset stat lists keep the probe's defaults."""
    defaults = ProbeOptions()
    return ProbeOptions(
        grad_stats=tuple(cfg.grad_stats) if cfg.grad_stats is not None else defaults.grad_stats,
        weight_stats=tuple(cfg.weight_stats) if cfg.weight_stats is not None else defaults.weight_stats,
        activation_stats=(tuple(cfg.activation_stats) if cfg.activation_stats is not None
                          else defaults.activation_stats),
        delta_stats=tuple(cfg.delta_stats) if cfg.delta_stats is not None else defaults.delta_stats,
        bins=cfg.bins,
    )


__all__ = [
    "Schedule",
    "build_model",
    "build_optimizer",
    "correct",
    "dtype_of",
    "l2_penalty",
    "legacy_stream",
    "weight_matrices",
    "loss_kind",
    "objective",
    "probe_options",
    "schedule_for",
]

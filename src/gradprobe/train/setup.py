"""Turn a RunConfig into torch objects: model, optimizer, objective and the probe's cadences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gradprobe.data.datasets import Dataset
from gradprobe.errors import GradprobeError
from gradprobe.models.mlp import MLP, build_mlp
from gradprobe.probe import ProbeOptions
from gradprobe.train.config import Cadence, OptimizerConfig, RecordConfig, RunConfig


@dataclass(frozen=True)
class Schedule:
    """Lengths of a run in optimizer steps."""

    steps_per_epoch: int
    total_steps: int

    def cadence(self, value: Cadence) -> int:
        return self.steps_per_epoch if value == "epoch" else int(value)


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


def build_model(cfg: RunConfig, data: Dataset, loss: str) -> MLP:
    """The MLP for this run, initialised from the run's seed."""
    generator = torch.Generator().manual_seed(cfg.seed)
    out = 1 if loss == "bce" else data.n_classes
    return build_mlp(data.n_features, out, cfg.model, generator=generator).to(cfg.device)


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


def l2_penalty(model: nn.Module, l2: float) -> torch.Tensor | float:
    """0.5 * l2 * sum(W^2) over weight matrices (biases excluded), as in CS231n."""
    if l2 == 0:
        return 0.0
    return 0.5 * l2 * sum((p * p).sum() for p in model.parameters() if p.dim() >= 2)


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
    "l2_penalty",
    "loss_kind",
    "objective",
    "probe_options",
    "schedule_for",
]

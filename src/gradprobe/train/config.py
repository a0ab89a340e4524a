"""Validated configuration of a run and of an experiment (a preset: several arms x seeds)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gradprobe import records as R
from gradprobe.data.config import DataConfig
from gradprobe.models.config import ModelConfig
from gradprobe.schedules import parse_cadence

Cadence = int | Literal["epoch"]
# A recording cadence: 10, "epoch", "log_spaced:50" or "at:0,10,100" (see schedules.cadence_schedule).
RecordCadence = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Strict):
    """Optimiser and regularisation."""

    name: Literal["sgd", "adam", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)  # learning rate (step size)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd and rmsprop
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    alpha: float = Field(0.99, gt=0, lt=1)  # rmsprop smoothing constant (Keras calls it rho, default 0.9)
    eps: float = Field(1e-8, gt=0)  # torch's form: added to sqrt(v) (adam: to the bias-corrected sqrt)
    # Adds 0.5 * l2 * sum(W^2) over weight matrices to the loss: the optimiser steps on the total
    # gradient, while the recorded grad statistics are of the data loss alone (as CS231n records them).
    l2: float = Field(0.0, ge=0, allow_inf_nan=False)
    # Decoupled: w <- w - lr * wd * w at each optimiser step, after the probe's weight snapshot
    # (so update_ratio includes it); Adam uses AdamW.
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)


class TrainConfig(_Strict):
    """How long and in what batches to train, and when to evaluate."""

    loss: Literal["auto", "bce", "cross_entropy"] = "auto"  # auto: bce for 2 classes, else cross_entropy
    batch_size: int | None = Field(32, ge=1)  # None: full batch
    epochs: int | None = Field(None, ge=1)  # give epochs or iterations (default 100 epochs)
    iterations: int | None = Field(None, ge=1)
    shuffle: bool = True
    eval_every: Cadence = "epoch"  # optimizer steps between evaluations of loss and accuracy
    stop_on_nonfinite: bool = True  # end the run as "diverged" at the first non-finite loss
    checkpoint_every: int | None = Field(None, ge=1)  # steps between checkpoints (for --resume)
    # torch intra-op threads while training. Small nets are bound by op dispatch, and with several
    # threads a busy second core slows them down 50x (measured); None keeps torch's default.
    threads: int | None = Field(1, ge=1)
    # Parameters and inputs; float64 reproduces a NumPy (float64) reference run step for step.
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("train.epochs and train.iterations conflict; give only one of them")
        if self.epochs is None and self.iterations is None:
            self.epochs = 100
        return self

    @field_validator("eval_every")
    @classmethod
    def _cadence(cls, value: Cadence) -> Cadence:
        return _check_cadence("train.eval_every", value)


def _check_cadence(field: str, value: Cadence | None) -> Any:
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{field}: {value!r} is not a cadence; allowed: an integer >= 1 or 'epoch'")
    return value


def _check_stats(field: str, value: list[str] | None, allowed: tuple[str, ...]) -> list[str] | None:
    for stat in value or []:
        if stat not in allowed:
            raise ValueError(f"{field}: {stat!r} is not a statistic; allowed: {', '.join(allowed)}")
    return value


class RecordConfig(_Strict):
    """What the probe records and how often."""

    every: RecordCadence = 1  # steps between records, "epoch", "log_spaced:N" (N steps) or "at:0,10,100"
    hist_every: RecordCadence | None = None  # histogram cadence, the same forms; None: no histograms
    bins: int = Field(30, ge=2, le=1000)
    params: list[str] | None = None  # fnmatch patterns of parameter names; None: all
    modules: list[str] | None = None  # fnmatch patterns of modules whose outputs are recorded; None: all leaves
    grad_stats: list[str] | None = None  # None: records.DEFAULT_GRAD_STATS
    weight_stats: list[str] | None = None
    activation_stats: list[str] | None = None
    delta_stats: list[str] | None = None
    nan_guard: bool = False  # name the module that produced the first NaN/Inf (run summary "nan_culprit")
    sharpness_every: int | None = Field(None, ge=1)  # steps between top Hessian eigenvalues; None: never
    snr_every: int | None = Field(None, ge=1)  # steps between per-parameter gradient SNRs; None: never

    @field_validator("every", "hist_every")
    @classmethod
    def _cadence(cls, value: RecordCadence | None, info: ValidationInfo) -> RecordCadence | None:
        if value is not None:
            parse_cadence(f"record.{info.field_name}", value)
        return value

    @field_validator("grad_stats", "delta_stats", "weight_stats", "activation_stats")
    @classmethod
    def _stats(cls, value: list[str] | None) -> list[str] | None:
        return _check_stats("record stats", value, R.ALL_STATS)


class RunConfig(_Strict):
    """Everything that determines one training run (one arm, one seed)."""

    experiment: str = "custom"
    arm: str = "default"
    arm_index: int = Field(0, ge=0)  # position of the arm in the experiment (cs231n init draws after earlier arms)
    seed: int = Field(0, ge=0, lt=2**32)
    device: str = "cpu"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    record: RecordConfig = RecordConfig()


class DecayConfig(_Strict):
    """The no-training experiment: an activation's derivative chained over n layers."""

    activations: list[str] = ["sigmoid"]
    x: list[float] = [0.0]  # pre-activation values at which the chain is evaluated
    steps: int = Field(6, ge=1, le=1000)  # number of chained derivative factors
    interval: tuple[float, float] = (-5.0, 5.0)  # plotting range of the activation curves
    points: int = Field(100, ge=2, le=100_000)  # grid points over the interval (np.linspace's count)
    tangent_at: float = 0.0  # x of the tangent line drawn on the curve
    tangent_span: float | None = Field(1.7, gt=0)  # the tangent is drawn over tangent_at +- span; None: whole interval


class ExperimentConfig(_Strict):
    """A preset or user config: shared settings, arms that override them, and a seed count."""

    name: str = "custom"
    description: str = ""
    kind: Literal["train", "decay"] = "train"
    seeds: int = Field(1, ge=1, le=10_000)  # every arm is repeated over seeds seed .. seed + seeds - 1
    seed: int = Field(0, ge=0, lt=2**32)
    device: str = "cpu"
    data: dict[str, Any] = {}  # DataConfig fields shared by every arm
    model: dict[str, Any] = {}
    optimizer: dict[str, Any] = {}
    train: dict[str, Any] = {}
    record: dict[str, Any] = {}
    arms: list[dict[str, Any]] = [{"name": "default"}]  # each: {name, <the sections above to override>}
    decay: DecayConfig | None = None


__all__ = [
    "Cadence",
    "DecayConfig",
    "ExperimentConfig",
    "OptimizerConfig",
    "RecordCadence",
    "RecordConfig",
    "RunConfig",
    "TrainConfig",
]

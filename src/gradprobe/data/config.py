"""Validated configuration of the data a run trains on."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DATA_NAMES", "DataConfig", "DataName", "legacy_draws"]

DataName = Literal["circles", "moons", "xor", "spiral", "digits", "mnist", "fashion-mnist"]
DATA_NAMES: tuple[str, ...] = get_args(DataName)
Generator = Literal["numpy", "cs231n"]


class DataConfig(BaseModel):
    """Which data set to load and how; every field has a safe default."""

    model_config = ConfigDict(extra="forbid")

    # Data set: 2-D toy sets (circles, moons, xor, spiral), 8x8 digits, or 28x28 MNIST/Fashion.
    name: DataName = "circles"
    # circles/moons/xor: total number of points.
    n_samples: int = Field(default=1000, ge=2)
    # circles: radius of the inner circle relative to the outer one.
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    # circles/moons/xor: std of the Gaussian noise added to each point.
    noise: float = Field(default=0.1, ge=0.0, allow_inf_nan=False)
    # spiral: points per arm.
    n_per_class: int = Field(default=100, ge=1)
    # spiral: number of arms (= classes).
    n_classes: int = Field(default=3, ge=2)
    # spiral: "numpy" draws from default_rng(seed); "cs231n" from np.random.seed(seed) + randn, the
    # CS231n notebook's exact float64 points in class order (rows are kept in that order when there
    # is no test split or limit), so a model init "cs231n" can continue the same random stream.
    generator: Generator = "numpy"
    # Data seed (generation, train/test split); independent of the model seed.
    # Bounded because numpy and scikit-learn accept only seeds in [0, 2**32).
    seed: int = Field(default=0, ge=0, lt=2**32)
    # Held-out fraction for synthetic sets and digits; MNIST uses its own test files.
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    # MNIST directory; None -> env GRADPROBE_DATA, else ~/.cache/gradprobe/data.
    data_dir: str | None = None
    # Fetch missing MNIST files from the public mirror.
    download: bool = False
    # Use only the first N training examples (None = all).
    limit: int | None = Field(default=None, ge=1)
    # MNIST: scale pixels from 0..255 to 0..1.
    normalize: bool = True

    @model_validator(mode="after")
    def _check_generator(self) -> DataConfig:
        """Refuse the cs231n generator for data sets other than the spiral."""
        if self.generator == "cs231n" and self.name != "spiral":
            raise ValueError(f"data.generator: 'cs231n' is not available for data.name {self.name!r}; "
                             "allowed: cs231n only with spiral, numpy with any data set")
        return self


def legacy_draws(cfg: DataConfig) -> int:
    """Normal draws the data takes from NumPy's legacy stream: n_per_class * n_classes for a cs231n spiral."""
    return cfg.n_per_class * cfg.n_classes if cfg.generator == "cs231n" else 0

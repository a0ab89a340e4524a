"""Initialiser registry: sample statistics, bounds, orthogonality and weight_variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.errors import GradprobeError
from gradprobe.models import INITS, InitSpec, init_spec


def _sample(text: str, fan_out: int, fan_in: int, seed: int = 0) -> torch.Tensor:
    weight = torch.empty(fan_out, fan_in)
    init_spec(text).apply(weight, torch.Generator().manual_seed(seed), np.random.RandomState(seed))
    return weight


@pytest.mark.parametrize(
    ("text", "shape", "mean", "std"),
    [
        ("he_normal", (400, 400), 0.0, math.sqrt(2 / 400)),
        ("kaiming_normal", (300, 600), 0.0, math.sqrt(2 / 600)),
        ("he_uniform", (400, 400), 0.0, math.sqrt(2 / 400)),
        ("glorot_normal", (300, 500), 0.0, math.sqrt(2 / 800)),
        ("lecun_normal", (400, 400), 0.0, math.sqrt(1 / 400)),
        ("normal", (300, 300), 0.0, 1.0),
        ("normal:0.1", (400, 400), 0.0, 0.1),
        ("normal:2:0.5", (300, 300), 2.0, 0.5),
        ("uniform:-1:3", (300, 300), 1.0, 4 / math.sqrt(12)),
    ],
)
def test_sample_statistics(text: str, shape: tuple[int, int], mean: float, std: float) -> None:
    weight = _sample(text, *shape)
    assert weight.std().item() == pytest.approx(std, rel=0.03)
    assert weight.mean().item() == pytest.approx(mean, abs=0.03 * std)


@pytest.mark.parametrize(
    ("text", "shape", "low", "high"),
    [
        ("glorot_uniform", (300, 500), -math.sqrt(6 / 800), math.sqrt(6 / 800)),
        ("xavier_uniform", (50, 20), -math.sqrt(6 / 70), math.sqrt(6 / 70)),
        ("he_uniform", (300, 500), -math.sqrt(6 / 500), math.sqrt(6 / 500)),
        ("lecun_uniform", (300, 500), -math.sqrt(3 / 500), math.sqrt(3 / 500)),
        ("uniform:0.2", (300, 300), -0.2, 0.2),
        ("uniform(1, 2)", (300, 300), 1.0, 2.0),
    ],
)
def test_uniform_bounds(text: str, shape: tuple[int, int], low: float, high: float) -> None:
    weight = _sample(text, *shape)
    span = high - low
    assert weight.min().item() >= low - 1e-6
    assert weight.max().item() <= high + 1e-6
    assert weight.min().item() < low + 0.01 * span  # the bound is actually reached
    assert weight.max().item() > high - 0.01 * span


@pytest.mark.parametrize(
    ("text", "shape", "gain"),
    [
        ("orthogonal", (100, 300), 1.0),
        ("orthogonal", (300, 100), 1.0),
        ("orthogonal:2", (64, 64), 2.0),
    ],
)
def test_orthogonal_is_orthogonal(text: str, shape: tuple[int, int], gain: float) -> None:
    weight = _sample(text, *shape).double()
    # rows are orthonormal when wide, columns when tall
    gram = weight @ weight.T if shape[0] <= shape[1] else weight.T @ weight
    eye = torch.eye(min(shape), dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, rtol=0, atol=1e-5)


# every canonical init (and every alias) with arguments; fan_out=200, fan_in=500
VARIANCE_CASES = [
    "normal", "normal:0.05", "normal:1:0.3", "uniform:0.5", "uniform:-1:2", "glorot_uniform",
    "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "lecun_uniform", "orthogonal",
    "orthogonal:3", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "cs231n:0.1",
]


def test_variance_cases_cover_every_init() -> None:
    assert {init_spec(text).name for text in VARIANCE_CASES} == set(INITS)


@pytest.mark.parametrize("shape", [(200, 500), (500, 200)])
@pytest.mark.parametrize("text", VARIANCE_CASES)
def test_weight_variance_matches_empirical(text: str, shape: tuple[int, int]) -> None:
    fan_out, fan_in = shape
    weight = _sample(text, fan_out, fan_in, seed=1)
    expected = init_spec(text).weight_variance(fan_in=fan_in, fan_out=fan_out)
    assert weight.double().var().item() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize(
    ("text", "fan_in", "fan_out", "variance"),
    [
        ("he_normal", 400, 100, 2 / 400),
        ("glorot_uniform", 30, 10, 2 / 40),
        ("lecun_uniform", 8, 3, 1 / 8),
        ("normal:0.1", 5, 5, 0.01),
        ("uniform:-1:1", 5, 5, 1 / 3),
        ("orthogonal:2", 10, 40, 4 / 40),
    ],
)
def test_weight_variance_closed_form(text: str, fan_in: int, fan_out: int, variance: float) -> None:
    assert init_spec(text).weight_variance(fan_in, fan_out) == pytest.approx(variance, rel=1e-12)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(0, 5), (5, 0), (2.5, 5), (True, 5)])
def test_weight_variance_rejects_bad_fans(fan_in: object, fan_out: object) -> None:
    with pytest.raises(GradprobeError, match="is not a fan"):
        init_spec("he_normal").weight_variance(fan_in, fan_out)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("xavier_uniform", "glorot_uniform"),
        ("xavier-normal", "glorot_normal"),
        ("Kaiming_Uniform", "he_uniform"),
        ("kaiming_normal()", "he_normal"),
    ],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert init_spec(alias) == init_spec(canonical)
    assert torch.equal(_sample(alias, 20, 30), _sample(canonical, 20, 30))


@pytest.mark.parametrize(
    ("text", "args", "rendered"),
    [
        ("normal", (0.0, 1.0), "normal:0:1"),
        ("normal:0.1", (0.0, 0.1), "normal:0:0.1"),
        ("normal(1, 2)", (1.0, 2.0), "normal:1:2"),
        ("uniform:2", (-2.0, 2.0), "uniform:-2:2"),
        ("orthogonal", (1.0,), "orthogonal:1"),
        ("he_normal", (), "he_normal"),
    ],
)
def test_canonical_args(text: str, args: tuple[float, ...], rendered: str) -> None:
    spec = init_spec(text)
    assert spec.args == args
    assert str(spec) == rendered
    assert init_spec(rendered) == spec


def test_apply_is_deterministic_and_in_place() -> None:
    layer = nn.Linear(30, 20)
    spec = init_spec("he_normal")
    spec.apply(layer.weight, torch.Generator().manual_seed(3))
    first = layer.weight.detach().clone()
    spec.apply(layer.weight, torch.Generator().manual_seed(3))
    assert torch.equal(layer.weight, first)
    assert layer.weight.requires_grad and layer.weight.grad_fn is None
    spec.apply(layer.weight, torch.Generator().manual_seed(4))
    assert not torch.equal(layer.weight, first)


@pytest.mark.parametrize(
    ("text", "bad", "allowed"),
    [
        ("normal:0", "STD=0", "STD > 0"),
        ("normal:-0.1", "STD=-0.1", "STD > 0"),
        ("normal:1:0", "STD=0", "STD > 0"),
        ("normal:1:2:3", "'normal:1:2:3'", "normal:MEAN:STD"),
        ("uniform", "'uniform'", "uniform:A or uniform:A:B"),
        ("uniform:0", "A=0", "A > 0"),
        ("uniform:1:1", "A=1 >= B=1", "A < B"),
        ("uniform:2:-2", "A=2 >= B=-2", "A < B"),
        ("orthogonal:0", "GAIN=0", "GAIN > 0"),
        ("orthogonal:1:2", "'orthogonal:1:2'", "orthogonal:GAIN"),
        ("glorot_uniform:1", "'glorot_uniform:1'", "allowed: glorot_uniform"),
        ("he_normal(2)", "'he_normal(2)'", "allowed: he_normal"),
        ("glorot", "'glorot'", "did you mean 'glorot_"),
        ("kaiming", "'kaiming'", "did you mean 'kaiming_"),
        ("xavier_uniformm", "'xavier_uniformm'", "did you mean 'xavier_uniform'?"),
        ("normal:x", "'normal:x'", "is not a number"),
        ("normal(0.1", "'normal(0.1'", "expected NAME"),
    ],
)
def test_init_errors(text: str, bad: str, allowed: str) -> None:
    with pytest.raises(GradprobeError) as info:
        init_spec(text, "model.init")
    message = str(info.value)
    assert message.startswith("model.init: ")
    assert bad in message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "args"), [("glorot", ()), ("normal", (1.0, -1.0)), ("he_normal", (1.0,))]
)
def test_direct_construction_is_validated(name: str, args: tuple[float, ...]) -> None:
    with pytest.raises(GradprobeError):
        InitSpec(name, args)


def test_cs231n_init_is_the_transposed_legacy_numpy_draw() -> None:
    weight = torch.empty(3, 4, dtype=torch.float64)
    init_spec("cs231n:0.1").apply(weight, stream=np.random.RandomState(5))
    np.random.seed(5)
    np.testing.assert_array_equal(weight.numpy(), (0.1 * np.random.randn(4, 3)).T)  # W is (fan_in, fan_out)
    with pytest.raises(GradprobeError, match="legacy stream"):
        init_spec("cs231n:0.1").apply(weight)

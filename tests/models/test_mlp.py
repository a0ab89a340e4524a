"""ModelConfig validation and MLP structure, init and forward pass against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from gradprobe.errors import GradprobeError
from gradprobe.models import MLP, Maxout, ModelConfig, build_mlp


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("kwargs", "widths"),
    [
        ({}, [5, 5, 5, 5]),
        ({"hidden": [5, 5]}, [5, 5]),
        ({"hidden": [7, 3, 2]}, [7, 3, 2]),
        ({"depth": 4, "width": 5}, [5, 5, 5, 5]),
        ({"depth": 1, "width": 2}, [2]),
    ],
)
def test_config_widths(kwargs: dict[str, object], widths: list[int]) -> None:
    assert ModelConfig(**kwargs).widths() == widths


def test_config_defaults_and_round_trip() -> None:
    cfg = ModelConfig()
    assert (cfg.activation, cfg.init, cfg.bias_init, cfg.output_init) == (
        "relu", "glorot_uniform", 0.0, None,
    )
    cfg = ModelConfig(hidden=[3], activation="maxout:3", init="normal:0.1", output_init="he_normal")
    assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "field", "bad"),
    [
        ({"hidden": [5, 0]}, "model.hidden", "[5, 0]"),
        ({"hidden": [-1]}, "model.hidden", "[-1]"),
        ({"hidden": []}, "model.hidden", "[]"),
        ({"depth": 0, "width": 5}, "model.depth", "0"),
        ({"depth": 3, "width": -2}, "model.width", "-2"),
        ({"depth": 3}, "model.width", "model.depth=3"),
        ({"width": 3}, "model.depth", "model.width=3"),
        ({"hidden": [4], "depth": 2, "width": 4}, "model.hidden", "[4]"),
        ({"activation": "sigmod"}, "model.activation", "'sigmod'"),
        ({"activation": "maxout:1"}, "model.activation", "K=1"),
        ({"init": "normal:0"}, "model.init", "STD=0"),
        ({"init": "glorot"}, "model.init", "'glorot'"),
        ({"output_init": "uniform:1:0"}, "model.output_init", "'uniform:1:0'"),
        ({"bias_init": float("nan")}, "model.bias_init", "nan"),
        ({"widht": 3}, "widht", "Extra inputs are not permitted"),
    ],
)
def test_config_errors(kwargs: dict[str, object], field: str, bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig(**kwargs)
    message = str(info.value)
    assert field in message
    assert bad in message


@pytest.mark.parametrize(
    ("kwargs", "shapes"),
    [
        ({"hidden": [5, 5]}, [(5, 3), (5, 5), (2, 5)]),
        ({"depth": 4, "width": 5}, [(5, 3), (5, 5), (5, 5), (5, 5), (2, 5)]),
        ({"hidden": [4, 6], "activation": "maxout"}, [(8, 3), (12, 4), (2, 6)]),
        ({"hidden": [4], "activation": "maxout:3"}, [(12, 3), (2, 4)]),
    ],
)
def test_parameter_names_and_shapes(
    kwargs: dict[str, object], shapes: list[tuple[int, int]]
) -> None:
    model = build_mlp(3, 2, ModelConfig(**kwargs), _seeded())
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    expected = {}
    for index, (fan_out, fan_in) in enumerate(shapes):
        expected[f"layers.{2 * index}.weight"] = (fan_out, fan_in)
        expected[f"layers.{2 * index}.bias"] = (fan_out,)
    assert params == expected
    assert list(params) == list(expected)  # depth order
    assert model.weight_layers() == [f"layers.{2 * i}.weight" for i in range(len(shapes))]
    assert model.activation_layers() == [f"layers.{2 * i + 1}" for i in range(len(shapes) - 1)]
    assert isinstance(model.layers[-1], nn.Linear)  # logits: no output activation


@pytest.mark.parametrize(
    ("activation", "cls"),
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("leaky_relu:0.2", nn.LeakyReLU), ("maxout:2", Maxout)],
)
def test_activation_modules_are_distinct(activation: str, cls: type[nn.Module]) -> None:
    model = build_mlp(3, 2, ModelConfig(hidden=[4, 4], activation=activation), _seeded())
    acts = [model.get_submodule(name) for name in model.activation_layers()]
    assert all(type(act) is cls for act in acts)
    assert acts[0] is not acts[1]


def _np_activation(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "leaky_relu:0.2":
        return np.where(z > 0, z, 0.2 * z)
    if name == "linear":
        return z
    if name == "maxout:3":
        return z.reshape(*z.shape[:-1], -1, 3).max(axis=-1)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "activation", ["relu", "tanh", "sigmoid", "leaky_relu:0.2", "linear", "maxout:3"]
)
def test_forward_matches_numpy(activation: str) -> None:
    cfg = ModelConfig(hidden=[6, 5, 4], activation=activation, init="normal:0.5", bias_init=0.1)
    model = build_mlp(3, 2, cfg, _seeded(7)).double()
    x = torch.randn(9, 3, generator=_seeded(8), dtype=torch.float64)
    weights = [model.get_parameter(name).detach().numpy() for name in model.weight_layers()]
    biases = [model.get_parameter(name[: -len("weight")] + "bias").detach().numpy()
              for name in model.weight_layers()]
    h = x.numpy()
    for index, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w.T + b
        if index < len(weights) - 1:
            h = _np_activation(activation, h)
    out = model(x)
    assert tuple(out.shape) == (9, 2)
    np.testing.assert_allclose(out.detach().numpy(), h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal", "orthogonal", "normal:0.1"])
def test_same_seed_same_weights(init: str) -> None:
    cfg = ModelConfig(depth=3, width=8, init=init, output_init="lecun_normal")
    state = torch.get_rng_state()
    first = build_mlp(4, 3, cfg, _seeded(11)).state_dict()
    second = build_mlp(4, 3, cfg, _seeded(11)).state_dict()
    other = build_mlp(4, 3, cfg, _seeded(12)).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not consumed
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["layers.0.weight"], other["layers.0.weight"])


def test_inits_and_bias_are_applied() -> None:
    cfg = ModelConfig(
        depth=2, width=300, init="normal:2:0.5", output_init="uniform:0.001", bias_init=-0.25
    )
    model = build_mlp(200, 300, cfg, _seeded())
    first, second, output = (model.get_parameter(name) for name in model.weight_layers())
    for hidden in (first, second):
        assert hidden.mean().item() == pytest.approx(2.0, abs=0.02)
        assert hidden.std().item() == pytest.approx(0.5, rel=0.03)
    assert output.abs().max().item() <= 0.001
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(param, torch.full_like(param, -0.25))


def test_output_init_defaults_to_init() -> None:
    model = build_mlp(300, 300, ModelConfig(hidden=[300], init="normal:3"), _seeded())
    output = model.get_parameter(model.weight_layers()[-1])
    assert output.std().item() == pytest.approx(3.0, rel=0.03)


def test_model_is_trainable() -> None:
    model = build_mlp(3, 2, ModelConfig(hidden=[5, 5]), _seeded())
    assert isinstance(model, MLP)
    model(torch.randn(4, 3, generator=_seeded(1))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    ("in_features", "out_features", "bad"),
    [(0, 2, "in_features: 0"), (3, 0, "out_features: 0"), (2.0, 2, "in_features: 2.0")],
)
def test_build_rejects_bad_sizes(in_features: object, out_features: object, bad: str) -> None:
    with pytest.raises(GradprobeError, match=bad):
        build_mlp(in_features, out_features, ModelConfig(), _seeded())  # type: ignore[arg-type]

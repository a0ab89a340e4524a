"""Activation registry and spec parsing: derivatives vs torch.autograd, maxout vs NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradprobe.errors import GradprobeError
from gradprobe.models import ACTIVATIONS, ActivationSpec, Maxout, activation_spec, parse_spec
from gradprobe.models.activations import Erf
from gradprobe.models.spec import format_spec

ELEMENTWISE = [name for name in ACTIVATIONS if name != "maxout"]
# grid plus the kinks and thresholds where torch's autograd conventions matter
GRID = torch.cat(
    [
        torch.linspace(-8.0, 8.0, 801, dtype=torch.float64),
        torch.tensor([0.0, -3.0, 3.0, 20.0, -20.0, 21.0, 30.0, 1e-9, -1e-9], dtype=torch.float64),
    ]
)


@pytest.mark.parametrize(
    "text", [*ELEMENTWISE, "leaky_relu:0.2", "leaky_relu:0", "elu:0.5", "elu(2)", "swish"]
)
def test_derivative_matches_autograd(text: str) -> None:
    spec = activation_spec(text)
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(spec.module()(x).sum(), x)
    assert spec.derivative is not None
    # rtol 1e-7: torch's hardsigmoid backward multiplies by a float32 1/6
    torch.testing.assert_close(spec.derivative(GRID), grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("text", [*ELEMENTWISE, "leaky_relu:0.2", "elu:0.5"])
def test_fn_matches_module(text: str) -> None:
    spec = activation_spec(text)
    assert spec.fn is not None
    torch.testing.assert_close(spec.fn(GRID), spec.module()(GRID), rtol=0, atol=0)
    assert spec.width_multiplier == 1


@pytest.mark.parametrize(
    ("text", "cls", "attrs"),
    [
        ("sigmoid", nn.Sigmoid, {}),
        ("tanh", nn.Tanh, {}),
        ("relu", nn.ReLU, {}),
        ("leaky_relu", nn.LeakyReLU, {"negative_slope": 0.01}),
        ("leaky_relu:0.3", nn.LeakyReLU, {"negative_slope": 0.3}),
        ("elu", nn.ELU, {"alpha": 1.0}),
        ("elu:0.5", nn.ELU, {"alpha": 0.5}),
        ("selu", nn.SELU, {}),
        ("gelu", nn.GELU, {"approximate": "none"}),
        ("silu", nn.SiLU, {}),
        ("swish", nn.SiLU, {}),
        ("softplus", nn.Softplus, {}),
        ("hard_sigmoid", nn.Hardsigmoid, {}),
        ("Hard-Sigmoid", nn.Hardsigmoid, {}),
        ("erf", Erf, {}),
        ("linear", nn.Identity, {}),
        ("maxout", Maxout, {"k": 2}),
        ("maxout(3)", Maxout, {"k": 3}),
    ],
)
def test_module_class(text: str, cls: type[nn.Module], attrs: dict[str, object]) -> None:
    spec = activation_spec(text)
    module = spec.module()
    assert type(module) is cls
    assert module is not spec.module()  # fresh module each call
    for key, value in attrs.items():
        assert getattr(module, key) == value


def test_every_name_has_a_module() -> None:
    assert set(ACTIVATIONS) == {
        "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus",
        "hard_sigmoid", "erf", "linear", "maxout",
    }


def test_sigmoid_derivative_peaks_at_quarter() -> None:
    derivative = activation_spec("sigmoid").derivative
    assert derivative is not None
    values = derivative(GRID)
    assert values.max().item() == pytest.approx(0.25, abs=1e-15)
    assert abs(GRID[values.argmax()].item()) < 1e-12
    assert derivative(torch.tensor(0.0, dtype=torch.float64)).item() == 0.25
    assert (values <= 0.25).all()


def test_hard_sigmoid_is_relu6_shifted() -> None:
    fn = activation_spec("hard_sigmoid").fn
    assert fn is not None
    torch.testing.assert_close(fn(GRID), torch.nn.functional.relu6(GRID + 3) / 6)


@pytest.mark.parametrize(("k", "shape"), [(2, (7, 10)), (3, (2, 4, 9)), (4, (8,))])
def test_maxout_matches_numpy(k: int, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    out = activation_spec(f"maxout:{k}").module()(x)
    a = x.numpy()
    width = shape[-1] // k
    expected = np.stack([a[..., j * k : (j + 1) * k].max(axis=-1) for j in range(width)], axis=-1)
    assert tuple(out.shape) == (*shape[:-1], width)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_maxout_accepts_non_contiguous_input() -> None:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).T  # (4, 6), non-contiguous
    expected = x.contiguous().numpy().reshape(4, 3, 2).max(axis=-1)
    np.testing.assert_array_equal(Maxout(2)(x).numpy(), expected)


def test_maxout_spec_has_no_elementwise_function() -> None:
    spec = activation_spec("maxout:3")
    assert spec.fn is None
    assert spec.derivative is None
    assert spec.width_multiplier == 3


def test_maxout_rejects_indivisible_width() -> None:
    with pytest.raises(ValueError, match="not a multiple of k=3"):
        Maxout(3)(torch.zeros(2, 7))


@pytest.mark.parametrize("k", [1, 0, 2.0, True])
def test_maxout_module_rejects_bad_k(k: object) -> None:
    with pytest.raises(GradprobeError, match="Maxout.k"):
        Maxout(k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("relu", "relu", ()),
        ("  Tanh ", "tanh", ()),
        ("Leaky-ReLU:0.1", "leaky_relu", (0.1,)),
        ("normal:0:0.1", "normal", (0.0, 0.1)),
        ("normal(0, 0.1)", "normal", (0.0, 0.1)),
        ("normal( 1e-2 )", "normal", (0.01,)),
        ("orthogonal()", "orthogonal", ()),
        ("uniform:-1:1", "uniform", (-1.0, 1.0)),
        ("he_normal", "he_normal", ()),
    ],
)
def test_parse_spec(text: str, name: str, args: tuple[float, ...]) -> None:
    assert parse_spec(text, "x.field") == (name, args)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "tanh(", "tanh)", "a,b", "normal:", "normal::1", "normal:abc", "normal:nan",
     "normal:-inf", "normal(1,)", "normal(1)(2)", "normal(1):2", "1relu", "leaky relu", "re$lu"],
)
def test_parse_spec_rejects_malformed(text: str) -> None:
    with pytest.raises(GradprobeError) as info:
        parse_spec(text, "x.field")
    message = str(info.value)
    assert message.startswith("x.field: ")
    assert repr(text) in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [3, None, ["relu"]])
def test_parse_spec_rejects_non_strings(value: object) -> None:
    with pytest.raises(GradprobeError, match=r"^x\.field: .* is not a spec string"):
        parse_spec(value, "x.field")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    name=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
    args=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)
def test_format_then_parse_round_trips(name: str, args: list[float]) -> None:
    assert parse_spec(format_spec(name, args), "f") == (name, tuple(args))


@pytest.mark.parametrize(
    ("text", "bad", "allowed"),
    [
        ("sigmod", "'sigmod'", "did you mean 'sigmoid'?"),
        ("Relu6", "'Relu6'", "allowed: sigmoid, tanh, relu"),
        ("relu:1", "'relu:1'", "allowed: relu"),
        ("tanh(0.5)", "'tanh(0.5)'", "allowed: tanh"),
        ("leaky_relu:0.1:2", "'leaky_relu:0.1:2'", "leaky_relu:ALPHA"),
        ("leaky_relu:-0.1", "ALPHA=-0.1", "ALPHA >= 0"),
        ("elu:-1", "ALPHA=-1", "ALPHA >= 0"),
        ("maxout:1", "K=1", "integer K >= 2"),
        ("maxout:2.5", "K=2.5", "integer K >= 2"),
        ("maxout:abc", "'abc'", "expected NAME"),
        ("maxout:", "'maxout:'", "expected NAME"),
        ("", "''", "expected NAME"),
    ],
)
def test_activation_errors(text: str, bad: str, allowed: str) -> None:
    with pytest.raises(GradprobeError) as info:
        activation_spec(text, "model.activation")
    message = str(info.value)
    assert message.startswith("model.activation: ")
    assert bad in message
    assert allowed in message
    assert "\n" not in message


def test_activation_error_uses_given_field() -> None:
    with pytest.raises(GradprobeError, match=r"^sweep\.activation: 'sigmod'"):
        activation_spec("sigmod", "sweep.activation")


def test_canonical_form() -> None:
    assert activation_spec("leaky_relu") == activation_spec("LEAKY_RELU(0.01)")
    assert str(activation_spec("leaky_relu")) == "leaky_relu:0.01"
    assert str(activation_spec("maxout")) == "maxout:2"
    assert activation_spec("swish").name == "silu"
    assert activation_spec("elu").args == (1.0,)
    assert ActivationSpec("maxout") == activation_spec("maxout:2")


@pytest.mark.parametrize(("name", "args"), [("sigmod", ()), ("relu", (1.0,)), ("maxout", (1.0,))])
def test_direct_construction_is_validated(name: str, args: tuple[float, ...]) -> None:
    with pytest.raises(GradprobeError):
        ActivationSpec(name, args)


def test_derivative_of_relu_at_zero_is_zero() -> None:
    derivative = activation_spec("relu").derivative
    assert derivative is not None
    assert derivative(torch.tensor([0.0, 1.0, -1.0])).tolist() == [0.0, 1.0, 0.0]
    leaky = activation_spec("leaky_relu:0.2").derivative
    assert leaky is not None
    assert leaky(torch.tensor(0.0, dtype=torch.float64)).item() == 0.2

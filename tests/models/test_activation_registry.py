"""Every registry entry against torch autograd: module, function, derivative, ensemble kernel and probe family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradprobe.activations import REGISTRY, Family
from gradprobe.models import activation_spec
from gradprobe.quantities.activation_stats import DEAD_TOLERANCE, FAMILIES, family_of, flat_mask, saturated_count
from gradprobe.train.ensemble_kernels import backward_kernel, forward_kernel, supported

# every registered activation at its default argument, plus a non-default argument where there is one
SPECS = [*REGISTRY, "leaky_relu:0.2", "elu:0.5", "maxout:3"]
_GEN = torch.Generator().manual_seed(11)
# wide random inputs plus the points where torch's conventions at kinks and thresholds matter
X = torch.cat([12 * torch.randn(3990, generator=_GEN, dtype=torch.float64),
               torch.tensor([0.0, -3.0, 3.0, 6.0, 20.0, -20.0, 1.0, -1.0, 60.0, -60.0], dtype=torch.float64)])


def _autograd(module: nn.Module, x: torch.Tensor, dh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi(x), dL/dx)`` for ``L = sum(dh * phi(x))`` by autograd through the module."""
    leaf = x.detach().clone().requires_grad_(True)
    out = module(leaf)
    (grad,) = torch.autograd.grad(out, leaf, torch.ones_like(out) if dh is None else dh)
    return out.detach(), grad


@pytest.mark.parametrize("text", SPECS)
def test_function_and_derivative_match_autograd(text: str) -> None:
    spec = activation_spec(text)
    module = spec.module()
    assert isinstance(module, spec.entry.module)
    if spec.fn is None or spec.derivative is None:  # maxout: only the module, max over groups of k
        k = spec.width_multiplier
        x = X[:2400].reshape(-1, 4 * k)  # (B, 4k)
        torch.testing.assert_close(module(x), x.reshape(-1, 4, k).max(-1).values, rtol=0, atol=0)
        assert spec.entry.kernel is None and spec.entry.family is None
        return
    out, grad = _autograd(module, X)
    torch.testing.assert_close(spec.fn(X), out, rtol=0, atol=0)
    # rtol 1e-7: torch's hardsigmoid backward multiplies by a float32 1/6
    torch.testing.assert_close(spec.derivative(X), grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("text", SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ensemble_kernel_matches_autograd(text: str, dtype: torch.dtype) -> None:
    spec = activation_spec(text)
    if not supported(spec):
        assert spec.name in ("linear", "maxout")  # left to the one-model loop, see the registry
        return
    z = X.to(dtype).reshape(-1, 8)  # (B, 8)
    dh = torch.randn(z.shape, generator=_GEN, dtype=torch.float64).to(dtype)
    out, grad = _autograd(spec.module(), z, dh)
    h, dz = torch.empty_like(z), torch.empty_like(z)
    forward_kernel(spec)(z, h)
    backward_kernel(spec)(dh, z, h, dz)
    torch.testing.assert_close(h, out, rtol=0, atol=0)
    torch.testing.assert_close(dz, grad, rtol=0, atol=0)


# every family the probe knows: the registry's modules and torch's own without a gradprobe spec
FAMILY_MODULES = [activation_spec(name).module() for name in REGISTRY if REGISTRY[name].family is not None] + [
    nn.ReLU6(), nn.RReLU(), nn.PReLU(), nn.CELU(alpha=2.0), nn.Mish(), nn.Hardswish(), nn.Softsign(),
    nn.Hardtanh(-2.0, 3.0), nn.ELU(alpha=0.5), nn.LeakyReLU(0.2), nn.Softplus(beta=2.0)]


def test_family_table_covers_registry_and_torch_extras() -> None:
    assert {type(m) for m in FAMILY_MODULES} == set(FAMILIES)
    assert all(FAMILIES[REGISTRY[n].module] is REGISTRY[n].family for n in REGISTRY if REGISTRY[n].family)


@pytest.mark.parametrize("module", FAMILY_MODULES, ids=lambda m: repr(m))
def test_family_matches_autograd_derivative(module: nn.Module) -> None:
    family = family_of(module)
    assert isinstance(family, Family)
    base = FAMILIES[type(module)]
    out, grad = _autograd(module.double(), X)
    slope = grad.abs()
    if family.dead is not None:
        dead = flat_mask(family.dead, X, out)
        if base.smooth_from is None:  # a flat region: the derivative is exactly 0 there and only there
            assert torch.equal(dead, slope == 0)
        else:  # a smooth tail: below tolerance left of the solved threshold, and all of the tail that is
            assert bool((slope[dead] < DEAD_TOLERANCE).all())
            tail = X < base.smooth_from
            assert torch.equal(dead[tail], slope[tail] < DEAD_TOLERANCE)
            assert bool(dead.any()) and not bool(dead.all())
    else:
        assert base.smooth_from is None
    if family.bounds is not None:
        lo, hi = family.bounds
        assert bool(((out >= lo) & (out <= hi)).all())
        for tol in (0.01, 0.05):  # saturated outputs have the smallest slopes of all inputs
            margin = tol * (hi - lo)
            saturated = (out <= lo + margin) | (out >= hi - margin)
            assert int(saturated_count(out, family.bounds, tol)) == int(saturated.sum()) > 0
            assert float(slope[saturated].max()) <= float(slope[~saturated].min())
    if family.leaky:  # never dead: a non-zero slope for negative inputs
        assert float(slope[X < 0].min()) > 0 and family.dead is None

"""Gradient noise: per-example signal-to-noise and the simple noise scale of McCandlish et al. (2018).

Standalone functions of a model and data, and the ``noise`` quantity the probe records from two batch
sizes (:mod:`gradprobe.noise_scale` gathers its inputs); no hooks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gradprobe import records as R
from gradprobe.quantities.base import Inputs, Quantity
from gradprobe.quantities.curvature import LossFn

MODEL_KEY = ""  # key of the whole-model entry, as records name the root module ""

Num = TypeVar("Num", float, torch.Tensor)


class NoiseScale(NamedTuple):
    """McCandlish et al.'s estimates: ``b_simple = trace_sigma / grad_sq``."""

    b_simple: float  # the simple noise scale, in examples
    grad_sq: float  # unbiased estimate of |G|^2, the squared norm of the true gradient
    trace_sigma: float  # unbiased estimate of tr(Sigma), the per-example gradient covariance's trace


def _named_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name; raises if there are none."""
    params: dict[str, torch.Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); nothing to differentiate")
    return params


def per_example_grads(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of ``loss_fn`` on each example alone, ``{name: (B, *param.shape)}``, by ``vmap(grad)``.

    Each example is run as a batch of one, so a model whose forward mixes examples (BatchNorm in
    train mode) is not supported. Cost: one vectorised forward and backward over the ``B`` examples
    that writes ``B x P`` numbers; memory-bound, so far dearer than one batch backward (measured
    ~35x on a 269k-parameter MLP at ``B = 128`` on one CPU thread, 1.7x a loop of ``B`` backwards).
    """
    params = {n: p.detach() for n, p in _named_trainable(model).items()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))  # untrainable params and buffers: the module's own
        return loss_fn(out, yi.unsqueeze(0))

    grads: dict[str, torch.Tensor] = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return grads


def gradient_snr(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per-parameter gradient signal-to-noise ratio from the ``B`` per-example gradients ``g_i`` of a batch.

    Definition, for each trainable parameter (flattened), with ``G = (1/B) sum_i g_i``::

        snr = ||G||^2 / ((1/B) sum_i ||g_i - G||^2)

    the squared norm of the mean per-example gradient over the mean squared deviation (the trace
    of the per-example covariance, ddof 0). It is the SNR of one example's gradient; the mean
    gradient of a batch of ``B`` has ``B`` times this SNR. On a whole fixed dataset it equals
    ``1 / B_simple`` of the population (see :func:`noise_scale_from_microbatches`).

    Bias, as an estimate of the population ``||mu||^2 / tr(Sigma)`` from a random batch:
    ``E||G||^2 = ||mu||^2 + tr(Sigma) / B`` and the denominator's mean is ``(B - 1) / B * tr(Sigma)``,
    so the ratio is about ``(snr_true + 1 / B) * B / (B - 1)``: pure noise reads ``~1 / (B - 1)``,
    not 0. Compare values at the same ``B``, or use :func:`simple_noise_scale` for unbiased parts.
    A parameter whose per-example gradients are all equal gets ``inf`` (``nan`` if all are zero), or
    a huge finite value when rounding in the mean leaves deviations of order machine epsilon.

    Cost: :func:`per_example_grads` (``B x P`` numbers in memory) plus two passes over them; one host
    sync for all layers. Measured ~60x one batch forward+backward on a 269k-parameter MLP at
    ``B = 128`` (~12x at ``B = 32``) on one CPU thread: sample a small batch, on a sparse cadence.

    Args:
        model: the network; its trainable parameters are reported.
        loss_fn: ``loss_fn(output, target) -> ()``, applied to one example at a time.
        x: inputs, ``(B, ...)`` with ``B >= 2``.
        y: targets, ``(B, ...)``.

    Returns:
        ``{parameter name: snr}`` in ``named_parameters`` order.

    Raises:
        ValueError: fewer than two examples, or ``x`` and ``y`` of different lengths.
    """
    if x.shape[0] < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} and y {y.shape[0]} examples: need the same number, at least 2")
    grads = per_example_grads(model, loss_fn, x, y)
    rows = []
    for g in grads.values():
        g = g.reshape(g.shape[0], -1)  # (B, D), our own buffer
        mean = g.mean(0)  # (D,)
        # Centre in place and reduce with one norm: exact (no E|g|^2 - |G|^2 cancellation) without
        # allocating further (B, D) temporaries, which dominated the time when done out of place.
        signal = mean.square().sum()
        rows.append(torch.stack([signal, torch.linalg.vector_norm(g.sub_(mean)).square() / g.shape[0]]))
    num, den = torch.stack(rows).double().unbind(1)  # (L,), (L,)
    return dict(zip(grads, (num / den).tolist()))


def simple_noise_scale(g_small_sq: Num, g_big_sq: Num, b_small: float, b_big: float) -> tuple[Num, Num, Num]:
    """McCandlish et al. (2018, app. A.1) unbiased |G|^2 and tr(Sigma) from two batch sizes, and their ratio.

    With ``|G_b|^2`` the squared norm of a gradient averaged over ``b`` i.i.d. examples,
    ``E|G_b|^2 = |G|^2 + tr(Sigma) / b``, which two sizes solve for::

        |G|^2    = (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
        tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1 / b_small - 1 / b_big)
        B_simple = tr(Sigma) / |G|^2

    The two parts are unbiased; their ratio is not, and either can be negative on one draw.
    The paper averages each part over many steps (e.g. an EMA) before dividing. Cost: arithmetic
    only; works elementwise on tensors (e.g. ``(L,)`` per-layer values) as on floats.

    Args:
        g_small_sq: ``|G_small|^2``, squared norm of a gradient over ``b_small`` examples.
        g_big_sq: ``|G_big|^2``, squared norm of a gradient over ``b_big`` examples.
        b_small: the small batch size (> 0).
        b_big: the big batch size (> b_small).

    Returns:
        ``(B_simple, |G|^2 estimate, tr(Sigma) estimate)``, of the type of the inputs.

    Raises:
        ValueError: unless ``0 < b_small < b_big``.
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"b_small={b_small!r}, b_big={b_big!r}: need 0 < b_small < b_big")
    return _estimate(g_small_sq, g_big_sq, b_small, b_big)


def _estimate(g_small_sq: Any, g_big_sq: Any, b_small: Any, b_big: Any) -> tuple[Any, Any, Any]:
    """:func:`simple_noise_scale`'s arithmetic, elementwise (batch sizes may be arrays too), unchecked."""
    grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace_sigma = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return trace_sigma / grad_sq, grad_sq, trace_sigma


class NoiseStats(Quantity):
    """Kind ``noise``: the simple noise scale and its parts from raw ``[|G_small|^2, |G_big|^2]`` per row.

    Meta per row is ``(b_small, b_big)``; finalising applies :func:`simple_noise_scale` to all rows at once.
    """

    kind = R.NOISE
    available = R.NOISE_STATS

    def raw(self, inputs: Inputs) -> torch.Tensor:
        return inputs.value  # (2,): mean |G_small|^2, |G_big|^2

    def meta(self, inputs: Inputs) -> tuple[float, ...]:
        raise NotImplementedError("noise rows carry their batch sizes as meta; see gradprobe.noise_scale")

    def finalize(self, raw: np.ndarray, meta: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
        small, big, b_small, b_big = raw[:, 0], raw[:, 1], meta[:, 0], meta[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            b_simple, grad_sq, trace = _estimate(small, big, b_small, b_big)
        cols = {R.B_SIMPLE: b_simple, R.GRAD_SQ: grad_sq, R.TRACE_SIGMA: trace, R.GRAD_SQ_SMALL: small,
                R.GRAD_SQ_BIG: big, R.B_SMALL: b_small, R.B_BIG: b_big}
        return np.column_stack([cols[s] for s in stats])


def noise_scale_from_microbatches(
    model: nn.Module, loss_fn: LossFn, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, NoiseScale]:
    """Simple noise scale per parameter and for the whole model (key ``""``) from ``K`` equal micro-batches.

    Each micro-batch ``k`` of ``b`` examples gives a gradient ``g_k`` of ``loss_fn`` (which must average
    over its batch, e.g. ``reduction="mean"``). The small batch is ``b`` with
    ``|G_small|^2 = (1/K) sum_k ||g_k||^2``; the big batch is ``K b`` with ``G_big = (1/K) sum_k g_k``,
    the gradient that accumulation would produce. Both are then fed to :func:`simple_noise_scale`.
    For micro-batches drawn i.i.d. from a dataset, the parts are unbiased for that dataset's
    ``|G|^2 = ||mean_i g_i||^2`` and ``tr(Sigma) = mean_i ||g_i - G||^2``. Whole-model values sum the
    per-parameter squared norms. ``.grad`` fields are left untouched.

    Cost: ``K`` forward and backward passes (the ones gradient accumulation does anyway) plus a
    float64 copy and norm of each micro-batch gradient (measured 1.5x plain accumulation for
    ``K = 4`` on a 269k-parameter MLP), one float64 parameter-sized buffer; one host sync at the end.

    Args:
        model: the network; its trainable parameters are reported.
        loss_fn: ``loss_fn(output, target) -> ()``, a mean over the micro-batch.
        batches: ``K >= 2`` pairs ``(x, y)``, each with the same number ``b`` of examples, ``x`` ``(b, ...)``.

    Returns:
        ``{parameter name or "": NoiseScale}``.

    Raises:
        ValueError: fewer than two micro-batches, or micro-batches of different sizes.
    """
    named = _named_trainable(model)
    params = list(named.values())
    small_sq = torch.zeros(len(params), dtype=torch.float64, device=params[0].device)  # (L,) sum_k ||g_k||^2
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]  # sum_k g_k
    sizes: list[int] = []
    for x, y in batches:
        sizes.append(int(x.shape[0]))
        grads = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True, materialize_grads=True)
        grads64 = [g.detach().double() for g in grads]
        small_sq += torch.stack(torch._foreach_norm(grads64)).square()
        torch._foreach_add_(total, grads64)
    if len(sizes) < 2 or len(set(sizes)) != 1:
        raise ValueError(f"micro-batch sizes {sizes}: need at least 2 micro-batches, all of the same size")
    k, b = len(sizes), sizes[0]
    small_sq /= k
    big_sq = torch.stack(torch._foreach_norm(total)).square() / k**2  # (L,) ||(1/K) sum_k g_k||^2
    small = torch.cat([small_sq, small_sq.sum().unsqueeze(0)])  # (L + 1,), whole model last
    big = torch.cat([big_sq, big_sq.sum().unsqueeze(0)])  # (L + 1,)
    parts = torch.stack(simple_noise_scale(small, big, b, k * b), dim=1).tolist()  # (L + 1, 3)
    return {name: NoiseScale(*row) for name, row in zip([*named, MODEL_KEY], parts)}


__all__ = [
    "MODEL_KEY",
    "NoiseScale",
    "NoiseStats",
    "gradient_snr",
    "noise_scale_from_microbatches",
    "per_example_grads",
    "simple_noise_scale",
]

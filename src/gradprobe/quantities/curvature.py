"""Sharpness: the Hessian eigenvalue of largest magnitude, by power iteration on Hessian-vector products.

Standalone: call it on a model and a batch whenever you want the number; no hooks, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    """The parameters with ``requires_grad``, in ``named_parameters`` order; raises if there are none."""
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); nothing to differentiate")
    return params


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one ``(P,)`` vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[torch.Tensor, torch.Tensor],
    iters: int = 20,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[float, int]:
    """Eigenvalue of largest magnitude of the Hessian of ``loss_fn(model(x), y)`` over trainable parameters.

    Power iteration ``v <- H v / ||H v||`` from a random unit vector; the estimate is the Rayleigh
    quotient ``v^T H v`` (signed: a negative value means the dominant curvature is negative). It stops
    when two successive estimates differ by at most ``tol`` relative, or after ``iters`` products.
    The stopping rule bounds the change, not the error: convergence is geometric with ratio
    ``(lambda_2 / lambda_1)^2``, so a small spectral gap needs more ``iters`` and a tighter ``tol``.
    ``model`` is used as it is (train/eval mode, dropout); ``.grad`` fields are left untouched.

    Cost: one forward and one backward with ``create_graph=True`` (the gradient graph is kept in
    memory for the whole call), then one Hessian-vector product per iteration, each a double backward
    costing about two backward passes; so about ``1 + 2 * iterations`` backward passes in all.

    Args:
        model: the network; its trainable parameters, ``P`` numbers in all, span the Hessian.
        loss_fn: ``loss_fn(output, target) -> ()`` scalar loss, e.g. ``nn.CrossEntropyLoss()``.
        batch: ``(x, y)`` with ``x`` of shape ``(B, ...)`` and ``y`` what ``loss_fn`` expects.
        iters: at most this many Hessian-vector products (>= 1).
        tol: relative change of the estimate below which iteration stops (>= 0).
        generator: source of the random start vector; its device is used to draw it.

    Returns:
        ``(eigenvalue, iterations)``: the estimate as a float and the number of products used.

    Raises:
        ValueError: ``iters < 1``, ``tol < 0`` or a model without trainable parameters.
    """
    if iters < 1:
        raise ValueError(f"iters={iters!r}: need at least one Hessian-vector product (iters >= 1)")
    if tol < 0 or math.isnan(tol):
        raise ValueError(f"tol={tol!r}: the relative stopping tolerance must be >= 0")
    params = _trainable(model)
    x, y = batch
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
    flat_grad = _flat(grads)  # (P,), differentiable w.r.t. params
    if not flat_grad.requires_grad:  # loss at most linear in the parameters: H = 0
        return 0.0, 0
    device = generator.device if generator is not None else flat_grad.device
    v = torch.randn(flat_grad.numel(), generator=generator, device=device, dtype=flat_grad.dtype)
    v = (v / v.norm()).to(flat_grad.device)  # (P,)
    estimate = math.nan
    for it in range(1, iters + 1):
        hv = _flat(torch.autograd.grad(flat_grad @ v, params, retain_graph=True, allow_unused=True,
                                       materialize_grads=True)).detach()  # (P,) = H v
        new = float(v @ hv)  # Rayleigh quotient, one host sync per iteration
        norm = hv.norm()
        if norm == 0:  # v lies in the null space: report 0 rather than dividing by it
            return 0.0, it
        v = hv / norm
        if abs(new - estimate) <= tol * abs(new):
            return new, it
        estimate = new
    return estimate, iters


__all__ = ["LossFn", "top_hessian_eigenvalue"]

"""The NaN guard tests' independent answer, shared by the guard's and the probe's tests."""

from __future__ import annotations

import torch
from torch import nn


def first_bad_leaf(model: nn.Module, x: torch.Tensor) -> str | None:
    """The first leaf module (in execution order) with finite inputs and a non-finite output, by plain isfinite."""
    found: list[str] = []
    hooks = [m.register_forward_hook(
        lambda m, a, o, name=name: found.append(name)
        if all(torch.isfinite(t).all() for t in a) and not torch.isfinite(o).all() else None)
        for name, m in model.named_modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return found[0] if found else None

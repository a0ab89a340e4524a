"""The one place that registers and removes torch hooks: everything is held as removable handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)


class _Removable(Protocol):
    def remove(self) -> None: ...


class _Restore:
    """Handle of a shadowed ``update``: puts back the previous one if the wrapper is still in place."""

    def __init__(self, scaler: Any, wrapper: Callable[..., None], previous: Callable[..., None] | None) -> None:
        self._scaler, self._wrapper, self._previous = scaler, wrapper, previous

    def remove(self) -> None:
        if vars(self._scaler).get("update") is self._wrapper:
            if self._previous is None:
                del self._scaler.update
            else:
                self._scaler.update = self._previous


class HookSet:
    """Handles of every hook a probe registered; ``remove_all`` undoes them all."""

    def __init__(self) -> None:
        self._handles: list[_Removable] = []

    def __len__(self) -> int:
        return len(self._handles)

    def forward(self, module: nn.Module, fn: Callable[[nn.Module, Any, Any], Any], traceable: bool = False) -> None:
        """Call ``fn(module, inputs, output)`` after every forward of ``module``.

        Inside a ``torch.compile`` graph dynamo traces forward hooks into the graph: ``traceable=False``
        hooks (ones that read the host, time themselves or walk the autograd graph) are then skipped
        rather than breaking the graph; ``traceable=True`` ones are traced as they are.
        """
        self._handles.append(module.register_forward_hook(fn if traceable else _eager_only(fn)))

    def optimizer(
        self,
        optimizer: torch.optim.Optimizer | None,
        pre: Callable[[torch.optim.Optimizer], None],
        post: Callable[[torch.optim.Optimizer], None],
    ) -> None:
        """Call ``pre``/``post`` around ``optimizer.step()``; around every optimizer's step if None."""
        if optimizer is None:
            self._handles.append(register_optimizer_step_pre_hook(lambda opt, a, k: pre(opt)))
            self._handles.append(register_optimizer_step_post_hook(lambda opt, a, k: post(opt)))
        else:
            self._handles.append(optimizer.register_step_pre_hook(lambda opt, a, k: pre(opt)))
            self._handles.append(optimizer.register_step_post_hook(lambda opt, a, k: post(opt)))

    def tensor(self, tensor: torch.Tensor, fn: Callable[[torch.Tensor], None]) -> None:
        """Call ``fn(grad)`` with each gradient computed for ``tensor`` (a parameter: before it is accumulated)."""
        self._handles.append(tensor.register_hook(fn))

    def accumulated(self, param: torch.Tensor, fn: Callable[[torch.Tensor], None]) -> None:
        """Call ``fn(param)`` after each backward has accumulated into ``param.grad``."""
        self._handles.append(param.register_post_accumulate_grad_hook(fn))

    def scaler_update(self, scaler: torch.amp.GradScaler, before: Callable[[], None]) -> None:
        """Call ``before()`` at the start of every ``scaler.update()`` (GradScaler has no hooks of its own).

        The instance's ``update`` is shadowed by a wrapper; removing the handle restores what was there.
        """
        original = scaler.update
        shadowed = "update" in vars(scaler)

        def update(*args: Any, **kwargs: Any) -> None:
            before()
            original(*args, **kwargs)

        scaler.update = update  # type: ignore[method-assign]
        self._handles.append(_Restore(scaler, update, original if shadowed else None))

    def remove_all(self) -> None:
        """Remove every registered hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()


def _eager_only(fn: Callable[[nn.Module, Any, Any], Any]) -> Callable[[nn.Module, Any, Any], Any]:
    """``fn`` in eager mode; a no-op that dynamo folds away inside a compiled graph (no graph break)."""
    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if torch.compiler.is_compiling():
            return None
        return fn(module, inputs, output)

    return hook


class DeltaTap(torch.autograd.Function):
    """Identity on a module output whose backward writes reductions of dL/d output into a buffer.

    The dynamo-friendly replacement of a tensor hook inside a ``torch.compile`` graph (a tensor hook
    that stores its result in Python breaks the graph; writing into a preallocated buffer is traced
    into the compiled backward). ``buffer`` is ``(k + 1,)``: the ``k`` reductions of ``reduce(grad)``,
    then the number of times backward reached the output since the buffer was last zeroed.
    """

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, buffer: torch.Tensor,  # type: ignore[override]
                reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(buffer)
        ctx.reduce = reduce
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (buffer,) = ctx.saved_tensors
        raw = ctx.reduce(grad).to(buffer.dtype)  # (k,)
        buffer.copy_(torch.cat([raw, buffer[-1:] + 1]))
        return grad, None, None


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a module output (LSTM and attention modules return tuples)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return first_tensor(list(value.values()))
    return None


__all__ = ["DeltaTap", "HookSet", "first_tensor"]

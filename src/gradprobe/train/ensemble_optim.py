"""SGD, Adam/AdamW and RMSprop on one flat ``(M, P)`` tensor, op for op as torch's single-tensor code.

Every update is elementwise, so stepping the stacked parameters of M models reproduces M
separate torch optimizers (tests/ensemble compare them). Writing the few ops out avoids
``torch.optim``'s per-step bookkeeping, which costs more than the update itself on tiny nets.
"""

from __future__ import annotations

import torch

from gradprobe.train.config import OptimizerConfig


class FlatOptimizer:
    """The optimizer of ``cfg`` for one flat parameter tensor, with decoupled weight decay as the loop does it.

    Args:
        cfg: optimizer section of the run config (shared by every member of an ensemble).
        param: the flat ``(M, P)`` parameters, updated in place.
    """

    def __init__(self, cfg: OptimizerConfig, param: torch.Tensor) -> None:
        self.cfg, self.param = cfg, param
        self.steps = 0
        self._buf: torch.Tensor | None = None  # sgd/rmsprop momentum, adam first moment
        self._sq = torch.zeros_like(param) if cfg.name in ("adam", "rmsprop") else None
        if cfg.name == "adam" or cfg.name == "rmsprop" and cfg.momentum > 0:
            self._buf = torch.zeros_like(param)

    def decay(self) -> None:
        """The loop's decoupled weight decay, after the record of the step (Adam does it inside, as AdamW)."""
        cfg = self.cfg
        if cfg.weight_decay > 0 and cfg.name != "adam":
            self.param.mul_(1 - cfg.lr * cfg.weight_decay)

    def step(self, grad: torch.Tensor) -> None:
        """Apply one update with gradient ``grad`` (M, P)."""
        self.steps += 1
        name = self.cfg.name
        if name == "sgd":
            self._sgd(grad)
        elif name == "adam":
            self._adam(grad)
        else:
            self._rmsprop(grad)

    def _sgd(self, grad: torch.Tensor) -> None:
        cfg = self.cfg
        if cfg.momentum != 0:
            if self._buf is None:
                self._buf = grad.detach().clone()
            else:
                self._buf.mul_(cfg.momentum).add_(grad, alpha=1)
            grad = self._buf
        self.param.add_(grad, alpha=-cfg.lr)

    def _adam(self, grad: torch.Tensor) -> None:
        cfg = self.cfg
        assert self._buf is not None and self._sq is not None
        beta1, beta2 = cfg.betas
        if cfg.weight_decay > 0:  # AdamW
            self.param.mul_(1 - cfg.lr * cfg.weight_decay)
        self._buf.lerp_(grad, 1 - beta1)
        self._sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # torch keeps the step count as a float32 tensor and reads it back as a Python float
        step = float(torch.tensor(float(self.steps), dtype=torch.float32))
        step_size = cfg.lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (self._sq.sqrt() / bias_correction2_sqrt).add_(cfg.eps)
        self.param.addcdiv_(self._buf, denom, value=-step_size)

    def _rmsprop(self, grad: torch.Tensor) -> None:
        cfg = self.cfg
        assert self._sq is not None
        self._sq.mul_(cfg.alpha).addcmul_(grad, grad, value=1 - cfg.alpha)
        avg = self._sq.sqrt().add_(cfg.eps)
        if cfg.momentum > 0:
            assert self._buf is not None
            self._buf.mul_(cfg.momentum).addcdiv_(grad, avg)
            self.param.add_(self._buf, alpha=-cfg.lr)
        else:
            self.param.addcdiv_(grad, avg, value=-cfg.lr)


__all__ = ["FlatOptimizer"]

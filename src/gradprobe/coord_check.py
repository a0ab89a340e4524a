"""Width-scaling check ("coordinate check", Yang et al., muP): do activation and update scales stay flat in width?

For each width the model is built anew, trained a few steps on one fixed batch, and every leaf module's
output and every weight's update are measured (means over seeds):

* ``act_rms`` at step ``t``: RMS of the module's output after ``t`` updates (``t = 0 .. steps``);
* ``act_delta_rms`` at step ``t``: RMS of (output after ``t`` updates - output at initialisation), on
  the same batch: how much training has moved the coordinates;
* ``upd_rms`` at step ``t``: RMS of the entries of ``W_{t+1} - W_t`` for each weight matrix (``t < steps``).

A parametrisation transfers across widths when each is flat in width. The verdict per layer is the slope
of ``log(value)`` against ``log(width)`` (least squares) of ``act_rms`` at step 0 and of ``act_delta_rms``
and ``upd_rms`` at the last step; ``|slope| > tolerance`` (default :data:`TOLERANCE`) is flagged. With
standard parametrisation and a fixed SGD learning rate, activations are flat at initialisation but their
change after a few steps grows with width (slope ~1 for the logits): the known blow-up muP fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.errors import GradprobeError

ACT_RMS, ACT_DELTA_RMS, UPD_RMS = R.ACT_RMS, R.ACT_DELTA_RMS, R.UPD_RMS
TOLERANCE = 0.25  # |slope| of log scale vs log width above which a layer is flagged (8x width: 1.7x change)
OPTIMIZERS = ("sgd", "adam")
Builder = Callable[[int, torch.Generator], nn.Module]  # (width, generator) -> model


@dataclass(frozen=True)
class CoordSetup:
    """What every width shares: steps, seeds, optimiser and the synthetic batch."""

    steps: int = 5
    seeds: int = 3
    optimizer: str = "sgd"
    lr: float = 0.1
    batch: int = 64
    features: int = 32
    classes: int = 10

    def check(self) -> None:
        """Raise a one-line error naming the first bad field."""
        for name in ("steps", "seeds", "batch", "features", "classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradprobeError(f"--{name}: {value!r}; allowed: an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise GradprobeError(f"--optimizer: {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise GradprobeError(f"--lr: {self.lr!r}; allowed: a finite number > 0")


def coord_batch(setup: CoordSetup, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch of one seed: ``x`` standard normal ``(batch, features)``, ``y`` uniform classes."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return (torch.randn(setup.batch, setup.features, generator=gen),
            torch.randint(0, setup.classes, (setup.batch,), generator=gen))


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt())


def _outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every leaf module's output on ``x``, without grad."""
    found: dict[str, torch.Tensor] = {}
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: found.__setitem__(n, o.detach().clone()))
             for n, m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return found


def measure(model: nn.Module, setup: CoordSetup, seed: int) -> pd.DataFrame:
    """Train ``model`` ``setup.steps`` steps on its seed's batch; rows ``step, layer, tensor, stat, value``."""
    x, y = coord_batch(setup, seed)
    weights = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
    opt = (torch.optim.SGD(model.parameters(), lr=setup.lr) if setup.optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=setup.lr))
    rows: list[tuple[int, str, str, str, float]] = []
    first = _outputs(model, x)
    for step in range(setup.steps + 1):
        outs = first if step == 0 else _outputs(model, x)
        for name, out in outs.items():
            rows += [(step, name, "output", ACT_RMS, _rms(out)),
                     (step, name, "output", ACT_DELTA_RMS, _rms(out - first[name]))]
        if step == setup.steps:
            break
        before = [p.detach().clone() for _, p in weights]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        for (name, p), old in zip(weights, before):
            layer, _, tensor = name.rpartition(".")
            rows.append((step, layer, tensor, UPD_RMS, _rms(p.detach() - old)))
    return pd.DataFrame(rows, columns=["step", "layer", "tensor", "stat", "value"])


def coord_check(build: Builder, widths: Sequence[int], setup: CoordSetup) -> pd.DataFrame:
    """Measure every width, averaged over seeds ``0 .. seeds-1``.

    Returns:
        Frame ``width, step, layer, tensor, kind ("coord"), stat, value`` (value: mean over seeds).
    """
    setup.check()
    parts = []
    for width in widths:
        for seed in range(setup.seeds):
            model = build(width, torch.Generator().manual_seed(seed))
            parts.append(measure(model, setup, seed).assign(width=width, seed=seed))
    raw = pd.concat(parts, ignore_index=True)
    keys = ["width", "step", "layer", "tensor", "stat"]
    mean = raw.groupby(keys, sort=False)["value"].mean().reset_index()
    return mean.assign(kind=R.COORD)[["width", "step", "layer", "tensor", "kind", "stat", "value"]]


def slopes(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per layer and stat: slope of log value vs log width (act_rms at step 0, the others at the last step).

    Returns:
        Frame ``layer, stat, step, slope, flagged`` (a zero or non-finite value anywhere gives slope NaN,
        not flagged); layers in first-seen order.
    """
    last = int(frame["step"].max())
    rows = []
    for (layer, stat), group in frame.groupby(["layer", "stat"], sort=False):
        step = 0 if stat == ACT_RMS else (last - 1 if stat == UPD_RMS else last)
        sel = group[group["step"] == step].sort_values("width")
        values = sel["value"].to_numpy(dtype=np.float64)
        if len(sel) < 2 or not np.all(np.isfinite(values) & (values > 0)):
            slope = float("nan")
        else:
            slope = float(np.polyfit(np.log(sel["width"].to_numpy(np.float64)), np.log(values), 1)[0])
        rows.append((layer, stat, step, slope, bool(abs(slope) > tolerance)))
    return pd.DataFrame(rows, columns=["layer", "stat", "step", "slope", "flagged"])


def verdicts(table: pd.DataFrame, tolerance: float = TOLERANCE) -> dict[str, str]:
    """One line per layer: ``flat`` or which scales grow/shrink with width (``~ width^slope``)."""
    out: dict[str, str] = {}
    for layer, group in table.groupby("layer", sort=False):
        bad = group[group["flagged"]]
        if bad.empty:
            out[str(layer)] = f"flat (every |slope| <= {tolerance:g})"
        else:
            parts = [f"{r.stat} {'grows' if r.slope > 0 else 'shrinks'} ~ width^{r.slope:.2f}"
                     for r in bad.itertuples()]
            out[str(layer)] = "does not transfer: " + "; ".join(parts)
    return out


__all__ = ["ACT_DELTA_RMS", "ACT_RMS", "OPTIMIZERS", "TOLERANCE", "UPD_RMS", "Builder", "CoordSetup",
           "coord_batch", "coord_check", "measure", "slopes", "verdicts"]

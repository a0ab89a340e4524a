"""``watch``: probe a training loop in two lines and get a diagnosis when it ends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from gradprobe.alerts import AlertCallback
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe
from gradprobe.schedules import Schedule

log = logging.getLogger(__name__)
# Measured on the 784-6x256-10 MLP (benchmarks/PROBE_DESIGNS.md): the probe's own time is ~45% of the wall time
# when it records every step (+75..100%), a few % at every 10 steps, and a 2% budget keeps it near 2% (3.4% over a
# 200-step run, where the forced steps 0, 1, 2, 4, ..., 128 dominate) whatever the model's size.
DEFAULT_BUDGET = 0.02


def _show(probe: Probe) -> None:
    """Print the probe's diagnosis on stderr (rich), or log why there is none."""
    from rich.console import Console

    from gradprobe.diagnose.engine import diagnose

    try:
        text = str(diagnose(probe))
    except GradprobeError as exc:
        log.warning("gradprobe.watch: no diagnosis: %s", exc)
        return
    Console(stderr=True, highlight=False).print(text, markup=False)


@contextmanager
def watch(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, every: int | Schedule | None = None,
          budget: float = DEFAULT_BUDGET, print_diagnosis: bool = True, on_alert: AlertCallback | None = None,
          **probe_kwargs: Any) -> Iterator[Probe]:
    """Attach a :class:`Probe` for the duration of a ``with`` block and print its diagnosis at exit.

    Example::

        with gradprobe.watch(model) as probe:
            for x, y in loader:
                ...  # the usual zero_grad / backward / optimizer.step()
        report = gradprobe.diagnose(probe)  # the same verdict as printed, as an object

    Args:
        model: the model being trained.
        optimizer: the optimizer to follow; None follows every torch optimizer holding the model's parameters.
        every: a fixed record cadence in optimizer steps (an int or a schedule ``step -> bool``); None
            (the default) records under ``budget`` instead.
        budget: the largest share of wall time the probe may take when ``every`` is None: it records
            step 0, every power of two, at least every 1000 steps, and more while it stays under it.
        print_diagnosis: print the compact diagnosis (one line per layer, remedies once per verdict, 80
            columns) on stderr when the block ends (also after an exception, e.g. a NaN check or Ctrl-C,
            when at least one step was recorded); ``gradprobe.diagnose(probe).verbose()`` has the evidence.
        on_alert: called with each live alert (a layer's verdict appeared or changed, see :mod:`gradprobe.alerts`);
            it may raise ``gradprobe.StopTraining`` to end the loop. None: a ``GradprobeAlert`` warning.
        probe_kwargs: further :class:`Probe` arguments (``hist_every``, ``params``, ``modules``, ``options``, ``sink``).

    Yields:
        The attached probe; it is detached (hooks removed, records flushed) when the block ends.

    Raises:
        GradprobeError: for a model or an option the probe rejects (at entry, before the loop runs).
    """
    cadence: dict[str, Any] = {"budget": budget} if every is None else {"every": every}
    probe = Probe(model, optimizer, on_alert=on_alert, **cadence, **probe_kwargs)
    try:
        yield probe
    finally:
        probe.detach()
        if print_diagnosis and probe.step_count > 0:
            _show(probe)


__all__ = ["DEFAULT_BUDGET", "watch"]

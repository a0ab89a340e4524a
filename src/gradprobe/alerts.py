"""Live alerts: the diagnosis re-run at each flush of a probe, and an :class:`Alert` when a layer's verdict changes.

At every flush the probe hands its new host frame to an :class:`AlertMonitor`, which keeps the
last :data:`WINDOW` recorded steps (only the statistics the rules read) and runs
:func:`gradprobe.diagnose.engine.diagnose` on them with the diagnosis's own thresholds: no device
work, no extra transfer. Within the window the rules judge as they do on a whole run (gradient
flow: median over every step of the window; units and updates: over its last 20%, at least 5
steps). When a layer's verdict first differs from healthy, or later changes, the alert names the
step it began: the first recorded step of the trailing stretch of the window where that layer's
own number (error ratio, dead fraction, update ratio, ...) is past the rule's limit
(:mod:`gradprobe.diagnose.onset`). A recovery (back to healthy) is announced only when the next flush
agrees, with the step and number of the flush that first saw it, so a layer that hovers at a limit does
not flap between alerts; a problem is announced at once.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gradprobe import records as R
from gradprobe.store.layout import COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from gradprobe.diagnose.evidence import Frames
    from gradprobe.diagnose.thresholds import Thresholds
    from gradprobe.diagnose.verdicts import LayerVerdict

log = logging.getLogger(__name__)  # "gradprobe.alerts"
# Recorded steps the live diagnosis looks back over: one default flush (ProbeOptions.flush_every), so each
# verdict describes the recent network, with enough steps (>= 13 in the units' 20% window) that one noisy
# batch cannot raise an alert.
WINDOW: Final = 64
# The only statistics the rules read (flow, units, updates, NaN counts): the rest is dropped at once.
_KEY: Final = ("kind", "stat", "layer", "tensor")
_READ: Final = frozenset((R.MEAN_ABS, R.MEAN, R.STD, R.NONFINITE, R.DEAD_FRAC, R.SATURATED_FRAC, R.UPDATE_RATIO))
ALERT_COLUMNS: Final = COLUMNS["alerts"]  # step, layer, verdict, previous, message, value
AlertCallback = Callable[["Alert"], None]


class GradprobeAlert(UserWarning):
    """The warning category of live alerts: filter with ``warnings.filterwarnings("ignore", category=...)``."""


class StopTraining(Exception):  # noqa: N818  (a request, not an error)
    """Raise from an ``on_alert`` callback to stop a training loop; it leaves ``optimizer.step()`` of that step.

    Example::

        def stop_on_vanishing(alert):
            if alert.verdict == "vanishing":
                raise gradprobe.StopTraining(alert)

        try:
            with gradprobe.Probe(model, opt, on_alert=stop_on_vanishing):
                for x, y in loader:
                    ...
        except gradprobe.StopTraining as stop:
            print("stopped:", stop.alert.message)
    """

    def __init__(self, alert: Alert | None = None) -> None:
        super().__init__(alert.message if alert is not None else "stopped by an on_alert callback")
        self.alert = alert


@dataclass(frozen=True)
class Alert:
    """A layer's verdict appeared or changed.

    Attributes:
        step: the recorded step the new verdict began (its number past the limit from there on).
        layer: the diagnosed layer (a weight matrix's parameter name, e.g. ``layers.0.weight``).
        verdict: the new verdict (one of ``diagnose.verdicts.PRECEDENCE``).
        previous: the verdict before, ``""`` if the layer had none yet.
        message: the alert in words, e.g. ``layers.0 started vanishing at step 1200 (...)``.
        evidence: the key number (error ratio, dead fraction, update ratio, ...), NaN if none.
    """

    step: int
    layer: str
    verdict: str
    previous: str
    message: str
    evidence: float

    def __str__(self) -> str:
        return self.message


def alerts_frame(alerts: Sequence[Alert]) -> pd.DataFrame:
    """Alerts as the store's frame: columns :data:`ALERT_COLUMNS` (``value`` is the evidence)."""
    import pandas as pd

    rows = [(a.step, a.layer, a.verdict, a.previous, a.message, float(a.evidence)) for a in alerts]
    frame = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64"})


def announce(alert: Alert) -> None:
    """The default channel: a :class:`GradprobeAlert` warning."""
    warnings.warn(alert.message, GradprobeAlert, stacklevel=2)


def dispatch(alerts: Sequence[Alert], callback: AlertCallback | None) -> None:
    """Log every alert (logger ``gradprobe.alerts``, INFO) and hand it to ``callback``, or warn if there is none.

    An exception of the callback (e.g. :class:`StopTraining`) propagates to the training loop.
    """
    for alert in alerts:
        log.info("%s", alert.message, extra={"alert": alert})
        (callback or announce)(alert)


class _Forward(logging.Handler):
    def __init__(self, to: AlertCallback) -> None:
        super().__init__(logging.INFO)
        self.to = to

    def emit(self, record: logging.LogRecord) -> None:
        alert = getattr(record, "alert", None)
        if isinstance(alert, Alert):
            self.to(alert)


@contextmanager
def forward_alerts(to: AlertCallback) -> Iterator[None]:
    """While the block runs, hand every alert any probe logs to ``to`` instead of the log's other handlers.

    What ``gradprobe run`` does to print each alert as a line above its progress bars.
    """
    handler, before, propagate = _Forward(to), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(before)
        log.propagate = propagate


class AlertMonitor:
    """Keeps the last ``window`` recorded steps of a probe's records and turns verdict changes into alerts.

    Args:
        weight_layers: weight matrices first to output (as :func:`gradprobe.diagnose` takes them).
        thresholds: the diagnosis's limits (default :class:`~gradprobe.diagnose.Thresholds`).
        window: recorded steps the rules look back over, at least 1.

    Raises:
        GradprobeError: for thresholds that are not a ``Thresholds`` or a window below 1.
    """

    def __init__(self, weight_layers: Sequence[str], thresholds: Thresholds | None = None,
                 window: int = WINDOW) -> None:
        from gradprobe.diagnose.thresholds import Thresholds
        from gradprobe.errors import GradprobeError

        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise GradprobeError(f"alerts: {thresholds!r} is not allowed; use True, False or a "
                                 "gradprobe.diagnose.Thresholds")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise GradprobeError(f"window: {window!r} is not allowed; use an integer >= 1 (recorded steps)")
        self.weight_layers, self.window = list(weight_layers), window
        self.thresholds = thresholds
        self._wide: pd.DataFrame | None = None  # (recorded step x (kind, stat, layer, tensor)) means
        self._state: dict[str, LayerVerdict] = {}  # each layer's verdict at the last flush
        self._announced: dict[str, LayerVerdict] = {}  # each layer's verdict as last alerted (or first seen healthy)
        self._held: dict[str, Alert] = {}  # recoveries seen at the last flush, announced if this one agrees
        self._broken = False

    def update(self, stats: pd.DataFrame, structure: Any = None) -> list[Alert]:
        """Add a flushed stats frame, re-judge the window and return the alerts of layers whose verdict changed.

        Never raises: a failure of the evaluation is logged once and alerts stop (training goes on).
        """
        if self._broken:
            return []
        try:
            return self._update(stats, structure)
        except Exception:  # noqa: BLE001  (a live alert must never stop the training it watches)
            self._broken = True
            log.exception("gradprobe alerts stopped: evaluating the diagnosis at a flush failed")
            return []

    def _update(self, stats: pd.DataFrame, structure: Any) -> list[Alert]:
        from gradprobe.diagnose import residual
        from gradprobe.diagnose.engine import RULES, _attribute
        from gradprobe.diagnose.thresholds import Thresholds
        from gradprobe.diagnose.verdicts import FROZEN, HEALTHY, LayerVerdict, severity

        t = self.thresholds or Thresholds()
        self._add(stats[stats["stat"].isin(_READ)])
        if self._wide is None:  # no statistic a rule reads has arrived yet (e.g. only weight norms so far)
            return []
        frames = residual.with_structure(self._frames(), structure)
        if not frames.weight_layers:  # nothing judgeable yet (e.g. no gradient recorded)
            return []
        # diagnose()'s pipeline on the window, without the words of healthy layers: the rules, then the
        # attribution of symptoms to dead/saturated units, then per layer the finding diagnose() leads with.
        findings = [f for rule in RULES for f in rule.check(frames, t)]
        _attribute(findings, {w: i for i, w in enumerate(frames.weight_layers)})
        lead: dict[str, LayerVerdict] = {}
        for f in sorted(findings, key=lambda f: (severity(f.verdict), "explained_by" in f.numbers)):
            lead.setdefault(f.layer, f)
        from gradprobe.diagnose.onset import alert_for

        raised: list[Alert] = []
        for layer in [*[f.layer for f in findings if f.layer not in frames.weight_layers], *frames.weight_layers]:
            entry = lead.get(layer) or LayerVerdict(layer, HEALTHY, "")
            self._state[layer] = entry
            announced, held = self._announced.get(layer), self._held.pop(layer, None)
            if (announced is None and entry.verdict == HEALTHY) or entry.verdict == FROZEN:
                self._announced[layer] = entry
            elif announced is None or announced.verdict != entry.verdict:
                alert = held if held is not None and entry.verdict == HEALTHY else Alert(
                    *alert_for(frames, entry, announced, t))
                if entry.verdict == HEALTHY and held is None:
                    self._held[layer] = alert  # a recovery is announced once the next flush agrees
                else:
                    raised.append(alert)
                    self._announced[layer] = entry
        return raised

    def _add(self, new: pd.DataFrame) -> None:
        """Append a flush's rows to the window as a (step x key) table of means; keep its last ``window`` steps."""
        import numpy as np
        import pandas as pd

        if new.empty:
            return
        codes, uniques = zip(*(pd.factorize(new[c].to_numpy()) for c in _KEY))  # per column: no tuples built
        shape = [len(u) for u in uniques]
        key_codes, combined = pd.factorize(np.ravel_multi_index(codes, shape))  # keys in order of appearance
        keys = pd.MultiIndex.from_arrays([u[c] for u, c in zip(uniques, np.unravel_index(combined, shape))])
        step_codes, steps = pd.factorize(new["step"].to_numpy())
        sums = np.zeros((len(steps), len(keys)))
        counts = np.zeros_like(sums)
        np.add.at(sums, (step_codes, key_codes), new["value"].to_numpy(np.float64))
        np.add.at(counts, (step_codes, key_codes), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            block = pd.DataFrame(sums / counts, index=steps, columns=keys)
        wide = block if self._wide is None else pd.concat([self._wide, block], sort=False)
        if not wide.index.is_unique:  # a step flushed twice (e.g. final weights): pool its rows
            wide = wide.groupby(level=0, sort=False).mean()
        self._wide = wide.sort_index(kind="stable").iloc[-self.window:]

    def _frames(self) -> Frames:
        """The window indexed as :func:`gradprobe.diagnose.evidence.build_frames` indexes a tidy frame."""
        import numpy as np
        import pandas as pd

        from gradprobe.diagnose.evidence import Frames

        assert self._wide is not None
        values, steps = self._wide.to_numpy(np.float64), self._wide.index
        series = {}
        for key, column, present in zip(self._wide.columns, values.T, ~np.isnan(values).T):
            if present.any():
                series[key] = pd.Series(column[present], index=steps[present])
        recorded = {f"{layer}.{tensor}" for kind, _, layer, tensor in series if kind == R.GRAD}
        outputs = [(kind, layer) for kind, _, layer, _ in series if kind in (R.ACTIVATION, R.DELTA)]
        acts = [layer for kind, layer in outputs if kind == R.ACTIVATION]
        modules = tuple(dict.fromkeys(acts + [layer for _, layer in outputs]))
        return Frames(series, tuple(w for w in self.weight_layers if w in recorded), modules)


__all__ = ["ALERT_COLUMNS", "WINDOW", "Alert", "AlertCallback", "AlertMonitor", "GradprobeAlert", "StopTraining",
           "alerts_frame", "announce", "dispatch", "forward_alerts"]

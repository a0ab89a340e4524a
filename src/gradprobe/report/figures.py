"""Decide which figures apply to a group of runs and write each as PNG and SVG with stable names."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from gradprobe import plots
from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.plots.curves import experiment_title
from gradprobe.plots.select import group_runs, stat_table
from gradprobe.report.boundary import boundary_grid
from gradprobe.store.artifacts import has_boundary
from gradprobe.store.atomic import atomic_path
from gradprobe.store.reader import Run
from gradprobe.theory import activation_curve, derivative_chain
from gradprobe.train.config import DecayConfig

__all__ = ["CAPTIONS", "FORMATS", "save_decay_figures", "save_figure", "save_figures"]

_log = logging.getLogger(__name__)

FORMATS = ("png", "svg", "pdf")
_DPI = 130
# File stem (before any "-<arm>" suffix) -> one-line caption, in report order.
CAPTIONS: dict[str, str] = {
    "01-loss-accuracy": "Loss and accuracy of every arm over training.",
    "02-grad-over-time": "Mean |dL/dW| of each weight matrix over training, one panel per arm.",
    "03-gradient-flow": "Mean |dL/dW| (solid) and mean |dL/dz| of each weight matrix's output (dashed) "
                        "against depth at the start, middle and end of training, with the mean-field "
                        "prediction at initialisation (dotted): a line falling towards the input is a "
                        "vanishing gradient.",
    "04-grad-heatmap": "log10 mean |dL/dW| per layer and step, one colour scale for all arms.",
    "05-grad-sum-abs-per-shape": "CS231n's magnitude heuristic sum|dL/dW| / sum(shape) per layer, "
                                 "of the data-loss gradient (before the L2 term), as CS231n records it.",
    "06-weight-stats": "Mean and standard deviation of each weight matrix over training.",
    "07-grad-mean-std-loss": "Gradient mean and std per layer beside the loss.",
    "08-unit-health": "Fraction of dead and saturated units per activation layer.",
    "09-decision-boundary": "Predicted class over the input plane with the data points.",
    "10-hist-grad": "Gradient histograms of each weight matrix over time (one file per arm).",
    "11-hist-weight": "Weight histograms of each weight matrix over time (one file per arm).",
    "12-unit-death": "When units died: per unit, alive / dead at times / dead on the recorded steps (layers of "
                     "<= 256 units), else a histogram of the step each dead unit has been dead since; "
                     "saturating layers: the fraction of recorded steps each unit spent near an asymptote.",
    "13-second-order": "Sharpness (top Hessian eigenvalue of the loss) and per-example gradient "
                       "signal-to-noise of each weight matrix over training.",
    "14-coord-check": "Width-scaling check: activation and update scale per layer against width "
                      "(log-log); flat lines mean the parametrisation transfers across widths.",
    "15-loss-scale": "GradScaler loss scale over training (log2), steps skipped for NaN/Inf gradients marked.",
    "01-activation-curves": "Each activation with its tangent at a point, beside its derivative.",
    "02-activation-overlay": "The activations and their derivatives on common axes.",
    "03-derivative-decay": "Running product of n derivative factors: the gradient's decay "
                           "through n layers that sit at pre-activation x.",
}
Builder = Callable[[], Figure]


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate the file formats before anything is drawn or written."""
    if isinstance(formats, str) or not formats:
        raise GradprobeError(f"formats: {formats!r} is not a list of formats; "
                             f"allowed: a non-empty list of {', '.join(FORMATS)}")
    for fmt in formats:
        if fmt not in FORMATS:
            raise GradprobeError(f"formats: {fmt!r} is not a figure format; "
                                 f"allowed: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def _slug(text: str) -> str:
    """A file-name-safe version of an arm name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "arm"


def _steps(runs: Sequence[Run], kind: str, stats: list[str], tensor: str = "weight") -> int:
    """How many distinct steps recorded every one of ``stats`` for ``kind``/``tensor``."""
    table = stat_table(runs, kind, stats, tensor)
    if table.empty or set(table["stat"]) != set(stats):
        return 0
    return int(table["step"].nunique())


def _ridges(run: Run, kind: str) -> Builder:
    """A builder of one run's histogram ridges (binds the loop variables now)."""
    return lambda: plots.histogram_ridges(run, kind=kind)


def _unit_death(run: Run, arm: str) -> Builder:
    """A builder of one run's unit-death figure (binds the loop variables now)."""
    return lambda: plots.unit_death(run.units(), f"arm {arm}")


def _plan(runs: Sequence[Run]) -> list[tuple[str, Builder]]:
    """The figures that apply to ``runs``, as (file stem, builder), in report order."""
    plan: list[tuple[str, Builder]] = []
    skipped: list[str] = []

    def add(stem: str, applies: bool, builder: Builder, why: str) -> None:
        (plan.append((stem, builder)) if applies else skipped.append(f"{stem} ({why})"))

    groups = group_runs(runs)
    add("01-loss-accuracy", any(not r.metrics().empty for r in runs),
        lambda: plots.loss_accuracy(runs), "no metrics")
    grad_steps = _steps(runs, R.GRAD, [R.MEAN_ABS])
    add("02-grad-over-time", grad_steps > 1, lambda: plots.grad_over_time(runs),
        "fewer than 2 steps of mean |grad|")
    add("03-gradient-flow", grad_steps > 0, lambda: plots.gradient_flow(runs),
        "no mean |grad| records")
    add("04-grad-heatmap", grad_steps > 1, lambda: plots.grad_heatmap(runs),
        "fewer than 2 steps of mean |grad|")
    add("05-grad-sum-abs-per-shape", _steps(runs, R.GRAD, [R.SUM_ABS_PER_SHAPE]) > 0,
        lambda: plots.grad_over_time(runs, stat=R.SUM_ABS_PER_SHAPE), "stat not recorded")
    add("06-weight-stats", _steps(runs, R.WEIGHT, [R.MEAN, R.STD]) > 1,
        lambda: plots.weight_stats(runs), "fewer than 2 steps of weight mean and std")
    add("07-grad-mean-std-loss", _steps(runs, R.GRAD, [R.MEAN, R.STD]) > 1,
        lambda: plots.grad_mean_std_loss(runs), "fewer than 2 steps of grad mean and std")
    health = stat_table(runs, R.ACTIVATION, [R.DEAD_FRAC, R.SATURATED_FRAC])
    add("08-unit-health", health["step"].nunique() > 1, lambda: plots.unit_health(runs),
        "no dead/saturated unit records")
    firsts = [group[0] for group in groups.values()]
    drawable = all(has_boundary(r.path) for r in firsts)
    add("09-decision-boundary", drawable,
        lambda: plots.decision_boundary([boundary_grid(r) for r in firsts], experiment_title(
            firsts, "decision boundary, predicted class over the input plane")),
        "data not 2-D or no stored grid")
    for kind, number in ((R.GRAD, "10"), (R.WEIGHT, "11")):
        for arm, group in groups.items():
            hists = group[0].hists()
            has = bool(((hists["kind"] == kind) & (hists["tensor"] == "weight")).any())
            add(f"{number}-hist-{kind}-{_slug(arm)}", has, _ridges(group[0], kind),
                "no histograms")
    for arm, group in groups.items():
        add(f"12-unit-death-{_slug(arm)}", not group[0].units().empty, _unit_death(group[0], arm),
            "no per-unit records")
    add("13-second-order", any(not r.frame(kind=[R.CURVATURE, R.SNR]).empty for r in runs),
        lambda: plots.second_order(runs), "record.sharpness_every and record.snr_every off")
    add("14-coord-check", any(not r.frame(kind=R.COORD).empty for r in runs),
        lambda: plots.coord_check(runs), "not a coord-check run")
    add("15-loss-scale", _steps(runs, R.STEP, [R.LOSS_SCALE], R.STEP_TENSOR) > 0,
        lambda: plots.loss_scale(runs), "no GradScaler records")
    if skipped:
        _log.info("figures skipped: %s", "; ".join(skipped))
    return plan


def save_figure(fig: Figure, path: Path) -> Path:
    """Write one figure atomically (a crash leaves no half-written file), in the format its suffix names."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=_DPI)
    return path


def _write(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Save ``fig`` once per format."""
    return [save_figure(fig, out_dir / f"{stem}.{fmt}") for fmt in formats]


def _save(builders: list[tuple[str, Builder]], out_dir: Path,
          formats: Sequence[str]) -> list[Path]:
    """Draw each figure and write it, returning every written path in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, build in builders:
        written += _write(build(), out_dir, stem, formats)
    _log.info("wrote %d figure files to %s", len(written), out_dir)
    return written


def save_figures(runs: Sequence[Run], out_dir: Path,
                 formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Draw every figure that applies to the run group and write it once per format.

    Names are stable, ``<NN>-<figure>[-<arm>].<format>`` (keys of ``CAPTIONS``), so a report
    can link them; figures whose records are missing are skipped (logged at INFO).

    Args:
        runs: the run group (every arm x seed of one experiment invocation).
        out_dir: directory to write into (created if missing).
        formats: any of ``png``, ``svg``, ``pdf``.

    Returns:
        The written files, in report order and format order.

    Raises:
        GradprobeError: on an unknown format or an empty run list (before anything is written).
    """
    formats = _check_formats(formats)
    return _save(_plan(runs), Path(out_dir), formats)


def save_decay_figures(decay_cfg: DecayConfig, out_dir: Path,
                       formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Draw the no-training figures (activation curves, overlay, derivative decay) and write them.

    Args:
        decay_cfg: the experiment's ``decay`` section.
        out_dir: directory to write into (created if missing).
        formats: any of ``png``, ``svg``, ``pdf``.

    Returns:
        The written files: ``01-activation-curves``, ``02-activation-overlay``,
        ``03-derivative-decay``, each once per format.

    Raises:
        GradprobeError: on an unknown format or an activation without an elementwise derivative
            (checked before anything is written).
    """
    formats = _check_formats(formats)
    curves = [activation_curve(a, decay_cfg.interval, decay_cfg.points, decay_cfg.tangent_at, decay_cfg.tangent_span)
              for a in decay_cfg.activations]
    chains = [{"activation": a, "x": x, "products": derivative_chain(a, x, decay_cfg.steps)}
              for a in decay_cfg.activations for x in decay_cfg.x]
    builders: list[tuple[str, Builder]] = [
        ("01-activation-curves", lambda: plots.activation_curves(curves)),
        ("02-activation-overlay", lambda: plots.activation_overlay(curves)),
        ("03-derivative-decay", lambda: plots.derivative_decay(chains)),
    ]
    return _save(builders, Path(out_dir), formats)

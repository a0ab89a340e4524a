"""``gradprobe sweep``: train a grid of configurations x seeds, resumably, and pool them per grid point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gradprobe.cli.console import err, out, progress_bars
from gradprobe.cli.format import json_number, num, pct, table
from gradprobe.cli.run import StoreOpt
from gradprobe.errors import GradprobeError

if TYPE_CHECKING:  # pandas, torch and the store load only when a sweep runs
    import pandas as pd

    from gradprobe.sweep.grid import Sweep
    from gradprobe.sweep.runner import SweepOutcome


def _pm(mean: float, ci: float, fmt: str) -> str:
    """``mean ± ci`` (the ± part left out when there is no interval)."""
    import pandas as pd

    text = pct(mean) if fmt == "pct" else num(mean, 3)
    if text == "-" or pd.isna(ci):
        return text
    return f"{text} ± {pct(ci) if fmt == 'pct' else num(ci, 2)}"


def _print_table(sweep: Sweep, agg: pd.DataFrame) -> None:
    import pandas as pd

    has_test = bool((agg["test_accuracy_n"] > 0).any())
    cols = ["arm", "grid point", "n", "diverged", "verdicts", "final loss", "train acc"] + (
        ["test acc"] if has_test else []) + ["vanishing factor", "geo. mean factor"]
    rows = []
    for r in agg.to_dict("records"):
        geo = 10 ** r["log10_vanishing_factor_mean"] if pd.notna(r["log10_vanishing_factor_mean"]) else None
        rows.append([str(r["arm"]), str(r["point"]) or "-", str(r["n_runs"]), str(r["n_diverged"]), r["verdicts"],
                     _pm(r["final_loss_mean"], r["final_loss_ci"], "num"),
                     _pm(r["train_accuracy_mean"], r["train_accuracy_ci"], "pct")]
                    + ([_pm(r["test_accuracy_mean"], r["test_accuracy_ci"], "pct")] if has_test else [])
                    + [_pm(r["vanishing_factor_mean"], r["vanishing_factor_ci"], "num"), num(geo, 3)])
    out.print(table(f"{sweep.experiment.name}: {sweep.sweep_id}", cols, rows))
    out.print("mean ± 95% t-interval half-width over seeds; NaN/inf values are left out of the mean "
              "(n counts runs). verdicts: how many runs `gradprobe diagnose` gives each overall verdict. "
              "vanishing factor = mean |grad| of the output layer's weights / the first's.")


def _save_figures(sweep: Sweep, agg: pd.DataFrame, out_dir: Path) -> list[Path]:
    from gradprobe.plots.sweep import accuracy_curve, depth_curve, heatmap
    from gradprobe.report.figures import save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    if agg["depth"].nunique() > 1:
        figures["depth-curve.png"] = depth_curve(agg)
        figures["accuracy-depth.png"] = accuracy_curve(agg)
    varying = [c for c in ["arm", *(a.path for a in sweep.axes)] if agg[c].astype(str).nunique() > 1]
    if len(varying) == 2:
        figures["heatmap-accuracy.png"] = heatmap(agg, varying[1], varying[0], "train_accuracy")
        figures["heatmap-vanishing.png"] = heatmap(agg, varying[1], varying[0], "vanishing_factor")
    return [save_figure(fig, out_dir / name) for name, fig in figures.items()]


def _json(sweep: Sweep, agg: pd.DataFrame, runs: int) -> str:
    points = [{k: json_number(v.item() if hasattr(v, "item") else v) for k, v in r.items()}
              for r in agg.to_dict("records")]
    return json.dumps({"sweep": sweep.sweep_id, "points": points, "runs": runs})


def _report(outcome: SweepOutcome, sweep: Sweep) -> None:
    err.print(f"sweep {sweep.sweep_id}: {len(sweep.items)} configurations; trained {len(outcome.ran)}, "
              f"already done {outcome.skipped}, failed groups {len(outcome.errors)}", markup=False)
    for message in outcome.errors:
        err.print(f"failed: {message}", markup=False)


def sweep(
    experiment: Annotated[str, typer.Argument(help="Preset name or YAML/JSON file (may hold a 'grid:' mapping).")],
    axes: Annotated[list[str] | None, typer.Argument(
        help="More AXIS=V1,V2 items, e.g. after --grid: --grid activation=sigmoid,tanh depth=2,4,8")] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="Axis AXIS=V1,V2,...: activation, depth, width, init, lr, optimizer, batch_size "
                       "or any dotted config path.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field, e.g. train.epochs=20.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds per grid point.")] = None,
    executor: Annotated[str, typer.Option(help="local, process or ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Worker processes / CPUs of a local Ray instance.")] = 2,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join, e.g. auto.")] = None,
    engine: Annotated[str, typer.Option(
        help="auto (ensemble where the configs allow it, else loop), loop (one config at a time) or ensemble.")
    ] = "auto",
    store: StoreOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Save the figures as PNG here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Train EXPERIMENT over a grid x seeds (finished configurations are skipped) and pool per grid point."""
    from gradprobe.store.layout import resolve_store
    from gradprobe.sweep.aggregate import aggregate, collect
    from gradprobe.sweep.grid import load_sweep
    from gradprobe.sweep.runner import SweepOptions, run_sweep

    spec = load_sweep(experiment, [*(grid or []), *(axes or [])], set_ or [], seeds)
    if address is not None and executor != "ray":
        raise GradprobeError(f"--address: {address!r} needs --executor ray; allowed with {executor!r}: none")
    root = resolve_store(store)
    if engine == "auto":
        from gradprobe.train.ensemble import pick_engine

        note = pick_engine(engine, [item.config for item in spec.items])[1]
        if note is not None:
            err.print(note, markup=False, soft_wrap=True)
    options = SweepOptions(executor=executor, workers=workers, address=address, engine=engine)
    with progress_bars() as bars:
        task = bars.add_task(f"sweep {spec.experiment.name}", total=None)
        outcome = run_sweep(spec, root, options,
                            lambda done, total: bars.update(task, completed=done, total=total))
    _report(outcome, spec)
    runs = collect(spec, root)
    agg = aggregate(runs)
    if as_json:
        typer.echo(_json(spec, agg, len(runs)))
    else:
        _print_table(spec, agg)
        out.print(f"runs stored in {root}")
    if out_dir is not None:
        for path in _save_figures(spec, agg, out_dir):
            err.print(f"wrote {path}", markup=False)
    if outcome.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the app."""
    app.command()(sweep)


__all__ = ["register"]

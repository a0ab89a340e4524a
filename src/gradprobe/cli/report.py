"""``gradprobe report`` (figures + interactive HTML) and ``gradprobe export tensorboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gradprobe.cli.console import out
from gradprobe.cli.run import StoreOpt

RunsArg = Annotated[list[str], typer.Argument(
    help="Run ids, unique run-id prefixes, or experiment names (= the runs of its latest invocation).",
    show_default=False)]

export_app = typer.Typer(help="Export stored runs to other tools.", no_args_is_help=True)


def report(
    runs: RunsArg,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default <store>/reports/<experiment>-<time>).")] = None,
    store: StoreOpt = None,
) -> None:
    """Write PNG/SVG figures and one self-contained interactive report.html for RUNS."""
    from gradprobe.report.html import write_report
    from gradprobe.report.select import report_dir, resolve_runs
    from gradprobe.store.layout import resolve_store

    root = resolve_store(store)
    chosen = resolve_runs(runs, root)
    page, figures = write_report(chosen, out_dir or report_dir(chosen, root))
    out.print(f"{len(chosen)} run(s), {len(figures)} figure file(s) in {page.parent}", markup=False, soft_wrap=True)
    out.print(f"report: {page}", markup=False, soft_wrap=True)


@export_app.command("tensorboard")
def tensorboard(
    runs: RunsArg,
    logdir: Annotated[Path, typer.Option("--logdir", help="TensorBoard log directory to write into.")],
    store: StoreOpt = None,
) -> None:
    """Write RUNS as TensorBoard event files, one sub-folder <experiment>/<arm>/seed<k> each."""
    from gradprobe.report.select import resolve_runs
    from gradprobe.report.tensorboard import export_runs
    from gradprobe.store.layout import resolve_store

    chosen = resolve_runs(runs, resolve_store(store))
    for run, folder in zip(chosen, export_runs(chosen, logdir)):
        out.print(f"{run.run_id} -> {folder}", markup=False, soft_wrap=True)
    out.print(f"view with: tensorboard --logdir {logdir}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` and the ``export`` group to the app."""
    app.command()(report)
    app.add_typer(export_app, name="export")


__all__ = ["register"]

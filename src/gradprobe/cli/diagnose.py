"""``gradprobe diagnose RUN``: the verdict on a stored run, one line per layer and the remedies per verdict.

``--verbose`` prints every layer's evidence in words; ``--json`` the same as one JSON object.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gradprobe.cli.console import out
from gradprobe.cli.run import StoreOpt


def diagnose(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix of one.")],
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Every layer's full evidence and remedies, not one line per layer.")] = False,
    vanishing_ratio: Annotated[float | None, typer.Option(
        help="Vanishing below this error ratio to the output layer [0.1].", show_default=False)] = None,
    exploding_ratio: Annotated[float | None, typer.Option(
        help="Exploding above this ratio [10].", show_default=False)] = None,
    dead_fraction: Annotated[float | None, typer.Option(
        help="Dead from this fraction of dead units [0.5].", show_default=False)] = None,
    saturated_fraction: Annotated[float | None, typer.Option(
        help="Saturated from this fraction of saturated outputs [0.5].", show_default=False)] = None,
    stalled_ratio: Annotated[float | None, typer.Option(
        help="Stalled below this fraction of the peers' update ratio [0.01].", show_default=False)] = None,
    window_fraction: Annotated[float | None, typer.Option(
        help="Last fraction of recorded steps for units and updates [0.2].", show_default=False)] = None,
    flow_window_fraction: Annotated[float | None, typer.Option(
        help="Last fraction of recorded steps for gradient flow [1 = the whole run].", show_default=False)] = None,
    min_window: Annotated[int | None, typer.Option(
        help="At least this many steps per window [5].", show_default=False)] = None,
) -> None:
    """Diagnose RUN: healthy, vanishing, exploding, dead, saturated, stalled or unstable per layer, or frozen."""
    from gradprobe.diagnose.engine import diagnose as run_diagnosis
    from gradprobe.diagnose.thresholds import Thresholds
    from gradprobe.store.reader import load_run

    thresholds = Thresholds().replace(
        vanishing_ratio=vanishing_ratio, exploding_ratio=exploding_ratio, dead_fraction=dead_fraction,
        saturated_fraction=saturated_fraction, stalled_ratio=stalled_ratio, window_fraction=window_fraction,
        flow_window_fraction=flow_window_fraction, min_window=min_window)
    result = run_diagnosis(load_run(run, store), thresholds)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    out.print(result.verbose() if verbose else result.compact(), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``diagnose`` to the app."""
    app.command()(diagnose)


__all__ = ["register"]

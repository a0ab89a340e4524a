"""``gradprobe ls``, ``show`` and ``query``: read the run store."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gradprobe import records as R
from gradprobe.cli.console import out
from gradprobe.cli.format import num, pct, table
from gradprobe.cli.run import StoreOpt


def ls(store: StoreOpt = None,
       as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON records.")] = False) -> None:
    """List the runs in the store, oldest first."""
    from gradprobe.store.reader import read_run_docs, run_rows, runs_frame

    docs = read_run_docs(store)
    if as_json:  # pandas writes the records, as it always has
        typer.echo(runs_frame(docs).to_json(orient="records"))
        return
    if not docs:
        out.print("no runs in this store; try 'gradprobe run circles-deep'")
        return
    rows = [[r["run_id"], str(r["experiment"]), str(r["arm"]), num(r["seed"]), str(r["status"]),
             num(r.get("summary.final_loss")), pct(r.get("summary.train_accuracy")),
             num(r.get("summary.vanishing_factor"), 3)] for r in run_rows(docs)]
    out.print(table("runs", ["run id", "experiment", "arm", "seed", "status", "final loss", "train acc",
                             "vanishing factor"], rows))


def _per_parameter(columns: dict[str, Any]) -> tuple[int, int, list[list[str]]]:
    """First and last step, and per parameter the mean at each and the median over all steps, in table rows.

    ``columns``: step, layer, tensor, value as lists sorted by step (parameters in order of appearance).
    """
    import numpy as np

    step, value = np.asarray(columns["step"]), np.asarray(columns["value"], dtype=np.float64)
    names = np.array([f"{layer}.{tensor}" for layer, tensor in zip(columns["layer"], columns["tensor"], strict=True)])
    unique, first_seen, which = np.unique(names, return_index=True, return_inverse=True)
    first, last = int(step.min()), int(step.max())
    rows = []
    for i in np.argsort(first_seen):
        mine = which == i
        rows.append([str(unique[i]), num(float(value[mine & (step == first)].mean()), 3),
                     num(float(np.median(value[mine])), 3), num(float(value[mine & (step == last)].mean()), 3)])
    return first, last, rows


def _value(key: str, value: Any) -> str:
    """A summary value as a cell; the probe's cost as a sentence."""
    if key == "probe_cost" and isinstance(value, dict):
        budget = value.get("budget")
        return (f"{pct(value.get('overhead'))} of wall time, {value.get('recorded_steps')} of {value.get('steps')} "
                f"steps recorded" + (f" (budget {pct(budget)})" if budget is not None else ""))
    return num(value) if isinstance(value, float) else str(value)


def show(run: Annotated[str, typer.Argument(help="Run id or a unique prefix of one.")], store: StoreOpt = None,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a run's config, environment, summary and the per-layer gradient table."""
    from gradprobe.store.reader import load_run

    r = load_run(run, store)
    if as_json:
        typer.echo(json.dumps({"run_id": r.run_id, "status": r.status, "config": r.config, "env": r.env,
                               "meta": r.meta, "summary": r.summary}, default=str))
        return
    out.print(f"[bold]{r.run_id}[/bold]  status: {r.status}")
    out.print(f"experiment {r.meta.get('experiment')}  arm {r.meta.get('arm')}  seed {r.meta.get('seed')}")
    summary = {k: v for k, v in r.summary.items() if k != "weight_layers"}
    out.print(table("summary", ["key", "value"], [[k, _value(k, v)] for k, v in summary.items()]))
    grads = r.table("stats", stat=R.MEAN_ABS, record_kind=R.GRAD)
    if grads.num_rows:
        first, last, rows = _per_parameter(grads.to_pydict())
        out.print(table(f"mean |grad| per parameter (step {first}, median, step {last})",
                        ["parameter", f"step {first}", "median", f"step {last}"], rows))
    out.print(f"config: {json.dumps(r.config)}")


def query(sql: Annotated[str, typer.Argument(
              help="One SELECT over tables runs, stats, metrics, hists, alerts, units.")],
          store: StoreOpt = None,
          as_json: Annotated[bool, typer.Option("--json")] = False,
          limit: Annotated[int, typer.Option(help="Rows to print (the table form).")] = 50) -> None:
    """Run a read-only SQL query over the store (DuckDB)."""
    import pandas as pd

    from gradprobe.store.query import query as run_query

    frame = run_query(sql, store)
    if as_json:
        typer.echo(frame.to_json(orient="records"))
        return
    with pd.option_context("display.max_rows", limit, "display.width", 200, "display.max_columns", 30):
        out.print(frame.head(limit).to_string(index=False), markup=False)
    if len(frame) > limit:
        out.print(f"... {len(frame) - limit} more rows (use --limit or --json)")


def register(app: typer.Typer) -> None:
    """Add the store-reading commands to the app."""
    for fn in (ls, show, query):
        app.command()(fn)


__all__ = ["register"]

"""``gradprobe ls``, ``show`` and ``query``: read the run store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gradprobe import records as R
from gradprobe.cli.console import out
from gradprobe.cli.format import num, pct, table
from gradprobe.cli.run import StoreOpt


def ls(store: StoreOpt = None,
       as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON records.")] = False) -> None:
    """List the runs in the store, oldest first."""
    from gradprobe.store.reader import list_runs

    runs = list_runs(store)
    if as_json:
        typer.echo(runs.to_json(orient="records"))
        return
    if runs.empty:
        out.print("no runs in this store; try 'gradprobe run circles-deep'")
        return
    get = lambda r, k: r.get(k) if k in r else None  # noqa: E731
    rows = [[r["run_id"], str(r["experiment"]), str(r["arm"]), str(r["seed"]), str(r["status"]),
             num(get(r, "summary.final_loss")), pct(get(r, "summary.train_accuracy")),
             num(get(r, "summary.vanishing_factor"), 3)] for r in runs.to_dict("records")]
    out.print(table("runs", ["run id", "experiment", "arm", "seed", "status", "final loss", "train acc",
                             "vanishing factor"], rows))


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
    out.print(table("summary", ["key", "value"], [[k, num(v) if isinstance(v, float) else str(v)]
                                                   for k, v in summary.items()]))
    frame = r.frame(kind=R.GRAD, stat=R.MEAN_ABS)
    if not frame.empty:
        per_layer = frame.assign(name=frame.layer + "." + frame.tensor).groupby("name", sort=False)["value"]
        steps = sorted(frame.step.unique())
        first, last = steps[0], steps[-1]
        rows = []
        for name, grp in frame.assign(name=frame.layer + "." + frame.tensor).groupby("name", sort=False):
            rows.append([name, num(grp[grp.step == first].value.mean(), 3), num(grp.value.median(), 3),
                         num(grp[grp.step == last].value.mean(), 3)])
        del per_layer
        out.print(table(f"mean |grad| per parameter (step {first}, median, step {last})",
                        ["parameter", f"step {first}", "median", f"step {last}"], rows))
    out.print(f"config: {json.dumps(r.config)}")


def query(sql: Annotated[str, typer.Argument(help="One SELECT over tables runs, stats, metrics, hists.")],
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

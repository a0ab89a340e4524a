"""``gradprobe presets`` and ``gradprobe run``: train an experiment's arms and print what they show."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from gradprobe.alerts import forward_alerts
from gradprobe.cli.console import err, out, progress_bars
from gradprobe.cli.format import json_number, num, pct, table
from gradprobe.errors import GradprobeError
from gradprobe.presets import preset_names, read_source

if TYPE_CHECKING:  # torch, pandas and the store load only when a command needs them
    from gradprobe.train.config import RunConfig
    from gradprobe.train.experiment import Experiment
    from gradprobe.train.loop import RunResult
    from gradprobe.train.runner import SinksFactory

StoreOpt = Annotated[str | None, typer.Option("--store", help="Run store directory (env GRADPROBE_STORE).")]


def presets() -> None:
    """List the shipped presets (classic experiments) with their descriptions."""
    rows = [[name, " ".join(str(read_source(name).get("description", "")).split())] for name in preset_names()]
    out.print(table("presets", ["name", "description"], rows))


def _print_results(exp: Experiment, results: list[RunResult], store: Path) -> None:
    has_test = any(r.summary["test_accuracy"] is not None for r in results)
    cols = ["arm", "seed", "status", "final loss", "train acc"] + (["test acc"] if has_test else []) + [
        "acc before", "vanishing factor", "median factor", "secs", "run id"]
    rows = [[r.config.arm, str(r.config.seed), r.status, num(r.summary["final_loss"]),
             pct(r.summary["train_accuracy"])] + ([pct(r.summary["test_accuracy"])] if has_test else []) + [
             pct(r.summary["accuracy_before"]), num(r.summary["vanishing_factor"], 3),
             num(r.summary["vanishing_factor_median"], 3), f"{r.summary['seconds']:.1f}", r.run_id or "-"]
            for r in results]
    out.print(table(exp.name, cols, rows))
    out.print("vanishing factor: mean |grad| of the output weights / of the first layer's, median over the last "
              "10% of recorded steps (median factor: over the whole run)")
    out.print(f"runs stored in {store}")


def _json_results(exp: Experiment, results: list[RunResult]) -> str:
    arms = [{"name": r.config.arm, "seed": r.config.seed, "run_id": r.run_id,
             "final_loss": json_number(r.summary["final_loss"]),
             "train_accuracy": json_number(r.summary["train_accuracy"]),
             "test_accuracy": json_number(r.summary["test_accuracy"]),
             "vanishing_factor": json_number(r.summary["vanishing_factor"])} for r in results]
    return json.dumps({"experiment": exp.name, "arms": arms})


def _run_decay(exp: Experiment, as_json: bool, figures_to: Path | None) -> None:
    """The no-training preset: print the chained-derivative table and save its figures."""
    from gradprobe.cli.theory import print_decay
    from gradprobe.theory import decay_chains

    cfg = exp.config.decay
    assert cfg is not None
    chains = decay_chains(cfg.activations, cfg.x, cfg.steps)
    if as_json:
        typer.echo(json.dumps({"experiment": exp.name, "chains": chains}))
    else:
        print_decay(f"{exp.name}: running product of phi'(x) over n layers", chains, cfg.steps)
    if figures_to is not None:
        from gradprobe.report.figures import save_decay_figures

        save_decay_figures(cfg, figures_to)
        (err if as_json else out).print(f"figures: {figures_to}", markup=False, soft_wrap=True)


def _resume(run_id: str, store: str | None, as_json: bool, conflicts: dict[str, object]) -> None:
    """Continue one interrupted run in place and print it like a one-run experiment."""
    from gradprobe.store.layout import resolve_store
    from gradprobe.train.config import ExperimentConfig
    from gradprobe.train.experiment import Experiment
    from gradprobe.train.runner import resume_run

    given = [name for name, value in conflicts.items() if value]
    if given:
        raise GradprobeError(f"--resume: {run_id!r} cannot be combined with {', '.join(given)}; "
                             "a resumed run keeps its stored config")
    root = resolve_store(store)
    with progress_bars() as bars, forward_alerts(lambda alert: bars.console.print(
            Text.assemble(("alert ", "bold yellow"), alert.message))):
        task = bars.add_task(f"resume {run_id}", total=None)
        result = resume_run(run_id, root, lambda done, total: bars.update(task, completed=done, total=total))
    exp = Experiment(ExperimentConfig(name=result.config.experiment), [result.config])
    if as_json:
        typer.echo(_json_results(exp, [result]))
    else:
        _print_results(exp, [result], root)


def run(
    experiment: Annotated[str | None, typer.Argument(
        help="Preset name (see 'gradprobe presets') or a YAML/JSON file.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field, e.g. optimizer.lr=0.01.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Repeat every arm over N seeds.")] = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Continue an interrupted run (id or prefix) from its last checkpoint.")] = None,
    data_dir: Annotated[str | None, typer.Option(
        "--data-dir", help="Folder with the MNIST/Fashion-MNIST IDX files (else env GRADPROBE_DATA).")] = None,
    stop_on_nonfinite: Annotated[bool | None, typer.Option(
        "--stop-on-nonfinite/--no-stop-on-nonfinite",
        help="End a run as 'diverged' at the first NaN/Inf loss [default: stop].", show_default=False)] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write figures and report.html.")] = False,
    report_to: Annotated[Path | None, typer.Option(
        "--report-dir", help="Report folder (default <store>/reports/<experiment>-<time>).")] = None,
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="Also log live to this TensorBoard log directory.")] = None,
    mlflow: Annotated[str | None, typer.Option(
        "--mlflow", metavar="URI", help="Also log live to MLflow at this tracking URI or directory "
        "(e.g. sqlite:///mlflow.db; '' = $MLFLOW_TRACKING_URI).")] = None,
    wandb: Annotated[str | None, typer.Option(
        "--wandb", metavar="PROJECT", help="Also log live to this W&B project "
        "(WANDB_MODE=offline keeps it on disk).")] = None,
    engine: Annotated[str, typer.Option(
        help="auto: ensemble where the configs allow it, else loop; loop: one model at a time; "
             "ensemble: same-shaped runs trained together (no live TensorBoard, MLflow or W&B).")
    ] = "auto",
) -> None:
    """Train every arm of EXPERIMENT (x seeds), store each run, and print the comparison."""
    if resume is not None:
        _resume(resume, store, as_json, {"EXPERIMENT": experiment, "--set": set_, "--seeds": seeds is not None,
                                         "--data-dir": data_dir, "--tensorboard": tensorboard is not None,
                                         "--mlflow": mlflow is not None, "--wandb": wandb is not None,
                                         "--engine": engine == "ensemble",
                                         "--[no-]stop-on-nonfinite": stop_on_nonfinite is not None})
        return
    if experiment is None:
        raise GradprobeError("experiment: missing; give a preset name (see 'gradprobe presets'), "
                             "a .yaml/.json file, or --resume RUN")
    from gradprobe.store.layout import resolve_store
    from gradprobe.train.ensemble import pick_engine, run_experiment_ensembled
    from gradprobe.train.experiment import load_experiment
    from gradprobe.train.runner import run_experiment

    nonfinite = [] if stop_on_nonfinite is None else [f"train.stop_on_nonfinite={str(stop_on_nonfinite).lower()}"]
    data = [] if data_dir is None else [f"data.data_dir={json.dumps(data_dir)}"]
    exp = load_experiment(experiment, data + (set_ or []) + nonfinite, seeds)
    live = {"--tensorboard": tensorboard, "--mlflow": mlflow, "--wandb": wandb}
    engine, note = pick_engine(engine, exp.runs, live_sinks=[opt for opt, value in live.items() if value is not None])
    if note is not None:
        err.print(note, markup=False, soft_wrap=True)
    if exp.config.kind == "decay":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        _run_decay(exp, as_json, None if no_report else report_to or resolve_store(store) / "reports" /
                   f"{exp.name}-{stamp}")
        return
    root = resolve_store(store)
    reports: list[Callable[[Path], None]] = []  # each MLflow run takes the report as artifacts
    with progress_bars() as bars, forward_alerts(lambda alert: bars.console.print(
            Text.assemble(("alert ", "bold yellow"), alert.message))):  # a line above the bars per live alert
        def progress(cfg: RunConfig):  # one bar per run
            task = bars.add_task(f"{cfg.arm} s{cfg.seed}", total=None)
            return lambda done, total: bars.update(task, completed=done, total=total)

        if engine == "ensemble":
            results = run_experiment_ensembled(exp, root, progress)
        else:
            results = run_experiment(exp, root, progress, _live_sinks(tensorboard, mlflow, wandb, reports))
    if as_json:
        typer.echo(_json_results(exp, results))
    else:
        _print_results(exp, results, root)
    if not no_report:
        page = _report(results, root, report_to, as_json)
        for add_report in reports:
            add_report(page.parent)


def _live_sinks(tensorboard: Path | None, mlflow: str | None, wandb: str | None,
                reports: list[Callable[[Path], None]]) -> SinksFactory | None:
    """Return a factory of the live sinks asked for, one of each per run (each library imported only then)."""
    if tensorboard is None and mlflow is None and wandb is None:
        return None
    from gradprobe.sinks import MLflowSink, RunSink, TensorBoardSink, WandbSink

    def make(cfg: RunConfig, run_id: str | None) -> list[RunSink]:
        sinks: list[RunSink] = []
        if tensorboard is not None:
            sinks.append(TensorBoardSink(tensorboard, cfg.experiment, cfg.arm, cfg.seed))
        if mlflow is not None:
            tags = {"gradprobe.run_id": run_id or "", "gradprobe.arm": cfg.arm, "gradprobe.seed": str(cfg.seed)}
            tracked = MLflowSink(mlflow or None, cfg.experiment, run_id, params=cfg.model_dump(mode="json"), tags=tags)
            reports.append(tracked.add_report)
            sinks.append(tracked)
        if wandb is not None:
            sinks.append(WandbSink(wandb or None, name=run_id, group=cfg.experiment, job_type=cfg.arm,
                                   config=cfg.model_dump(mode="json")))
        return sinks

    return make


def _report(results: list[RunResult], root: Path, folder: Path | None, as_json: bool) -> Path:
    """Write the figures and report.html of the stored runs; print the page's path (stderr with --json)."""
    from gradprobe.report.html import write_report
    from gradprobe.report.select import report_dir
    from gradprobe.store.reader import load_run

    runs = [load_run(r.run_id, root) for r in results if r.run_id is not None]
    page, _ = write_report(runs, folder or report_dir(runs, root))
    (err if as_json else out).print(f"report: {page}", markup=False, soft_wrap=True)
    return page


def register(app: typer.Typer) -> None:
    """Add ``presets`` and ``run`` to the app."""
    app.command()(presets)
    app.command()(run)


__all__ = ["register"]

"""``gradprobe coord-check MODEL_SPEC --widths 64,128,256,512``: do activation and update scales stay flat in width?

MODEL_SPEC is a preset name or YAML/JSON file (its ``model`` section), or inline ``key=value`` pairs of the
model section separated by commas (``depth=3,activation=relu,init=he_normal``). The width replaces every
hidden width. Each width is trained a few steps on a fixed synthetic batch, seeds averaged; the table, one
verdict per layer, a PNG figure and one stored run per width (kind ``coord``, width in the config) result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gradprobe.cli.console import out
from gradprobe.cli.run import StoreOpt
from gradprobe.errors import GradprobeError

_DEFAULT_DEPTH = 3


def parse_widths(text: str) -> list[int]:
    """``"64,128,256"`` -> ``[64, 128, 256]``; at least two distinct widths >= 1."""
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) < 2 or len(set(widths)) != len(widths) or min(widths) < 1:
        raise GradprobeError(f"--widths: {text!r}; allowed: at least two distinct integers >= 1, "
                             f"comma-separated, e.g. 64,128,256,512")
    return sorted(widths)


def model_section(spec: str) -> dict[str, Any]:
    """The model section a spec names, without its widths (``hidden``/``width``): those come from --widths."""
    if "=" in spec:
        section: dict[str, Any] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise GradprobeError(f"MODEL_SPEC: {item!r} in {spec!r} is not key=value; allowed: a preset, "
                                     f"a YAML file or key=value pairs such as depth=3,activation=relu")
            section[key.strip()] = value.strip()
    else:
        from gradprobe.presets import read_source

        section = dict(read_source(spec).get("model") or {})
    hidden = section.pop("hidden", None)
    section.pop("width", None)
    if hidden is not None and "depth" not in section:
        section["depth"] = len(hidden)
    section.setdefault("depth", _DEFAULT_DEPTH)
    return section


def coord_check(
    model_spec: Annotated[str, typer.Argument(
        metavar="MODEL_SPEC",
        help="Preset, YAML file (its model section) or key=value pairs, e.g. depth=3,init=he_normal.")],
    widths: Annotated[str, typer.Option(help="Comma-separated hidden widths, at least two.")] = "64,128,256,512",
    steps: Annotated[int, typer.Option(help="Training steps per width.")] = 5,
    seeds: Annotated[int, typer.Option(help="Seeds averaged per width.")] = 3,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate, the same at every width.")] = 0.1,
    batch: Annotated[int, typer.Option(help="Examples in the fixed synthetic batch.")] = 64,
    features: Annotated[int, typer.Option(help="Input features (standard normal).")] = 32,
    classes: Annotated[int, typer.Option(help="Classes (uniform random targets).")] = 10,
    tolerance: Annotated[float, typer.Option(
        help="Flag a layer when |slope| of log scale vs log width exceeds this.")] = 0.25,
    figure: Annotated[Path | None, typer.Option(help="PNG to write (default: coord-check.png here).",
                                                show_default=False)] = None,
    store: StoreOpt = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not store the runs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Width-scaling ("coordinate") check: activation and update scale per layer against width, log-log."""
    from dataclasses import asdict

    chosen = parse_widths(widths)
    if not tolerance > 0:
        raise GradprobeError(f"--tolerance: {tolerance!r}; allowed: a number > 0")
    from gradprobe.coord_check import CoordSetup
    from gradprobe.coord_check import coord_check as measure_widths

    setup = CoordSetup(steps=steps, seeds=seeds, optimizer=optimizer, lr=lr, batch=batch, features=features,
                       classes=classes)
    setup.check()
    section = model_section(model_spec)
    build = _builder(section, setup)
    frame = measure_widths(build, chosen, setup)
    run_ids = [] if no_store else _store(frame, section, asdict(setup), chosen, store)
    _report(frame, setup, chosen, tolerance, figure or Path("coord-check.png"), run_ids, as_json)


def _builder(section: dict[str, Any], setup: Any) -> Any:
    """``(width, generator) -> MLP`` from the model section (validated once, at the first width)."""
    from pydantic import ValidationError

    from gradprobe.models.config import ModelConfig
    from gradprobe.models.mlp import build_mlp
    from gradprobe.train.experiment import format_validation_error

    def build(width: int, generator: Any) -> Any:
        try:
            cfg = ModelConfig(**{**section, "width": width})
        except ValidationError as exc:
            raise GradprobeError(format_validation_error(exc, ModelConfig, "model")) from None
        return build_mlp(setup.features, setup.classes, cfg, generator=generator)

    return build


def _report(frame: Any, setup: Any, widths: list[int], tolerance: float, figure: Path, run_ids: list[str],
            as_json: bool) -> None:
    """Write the figure; print the slopes table and one verdict per layer (or all of it as JSON)."""
    from gradprobe.coord_check import slopes, verdicts
    from gradprobe.plots.coord_check import coord_figure
    from gradprobe.report.figures import save_figure

    table = slopes(frame, tolerance)
    lines = verdicts(table, tolerance)
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_figure(coord_figure(frame), figure)
    if as_json:
        typer.echo(json.dumps({"widths": widths, "slopes": table.to_dict(orient="records"), "verdicts": lines,
                               "figure": str(figure), "runs": run_ids}))
        return
    wide = table.pivot(index="layer", columns="stat", values="slope").reindex(list(lines))
    out.print(f"slope of log scale vs log width over widths {widths} ({setup.seeds} seeds, {setup.steps} steps, "
              f"{setup.optimizer} lr {setup.lr:g}); |slope| > {tolerance:g} is flagged", markup=False)
    header = f"{'layer':<12}" + "".join(f"{c:>15}" for c in wide.columns)
    out.print(header, markup=False)
    for layer, row in wide.iterrows():
        cells = "".join(f"{v:>15.2f}" if v == v else f"{'-':>15}" for v in row.to_numpy())  # NaN: no slope
        out.print(f"{layer!s:<12}{cells}", markup=False)
    for layer, verdict in lines.items():
        out.print(f"{layer}: {verdict}", markup=False)
    out.print(f"figure: {figure}", markup=False)
    if run_ids:
        out.print(f"stored runs: {', '.join(run_ids)}", markup=False)


def _store(frame: Any, section: dict[str, Any], setup: dict[str, Any], widths: list[int],
           store: str | None) -> list[str]:
    """One run per width: kind-``coord`` stats rows, the width and the check's settings in the config."""
    from gradprobe import records as R
    from gradprobe.store.layout import new_run_id
    from gradprobe.store.writer import RunWriter

    ids = []
    for width in widths:
        run_id = new_run_id("coord-check", f"width{width}", None)
        config = {"experiment": "coord-check", "width": width, "widths": widths, "model": {**section, "width": width},
                  "coord": setup}
        rows = frame[frame["width"] == width][list(R.STAT_COLUMNS)].reset_index(drop=True)
        with RunWriter(store, run_id, config=config, env={}, meta={"experiment": "coord-check",
                                                                  "arm": f"width {width}", "seed": None}) as writer:
            writer.add_stats(rows)
        ids.append(run_id)
    return ids


def register(app: typer.Typer) -> None:
    """Add ``coord-check`` to the app."""
    app.command("coord-check")(coord_check)


__all__ = ["model_section", "parse_widths", "register"]

"""``gradprobe theory`` and ``gradprobe decay``: what mean-field theory predicts for gradients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradprobe.cli.console import err, out
from gradprobe.cli.format import json_number, num, table
from gradprobe.errors import GradprobeError

if TYPE_CHECKING:  # scipy and torch load only when a command computes
    from matplotlib.figure import Figure

    from gradprobe.theory import TheoryResult

_DEFAULT_CHI_ACTIVATIONS = ("sigmoid", "tanh", "relu")
_PLOT_SUFFIXES = (".png", ".pdf", ".svg")

PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also save the figure (.png/.pdf/.svg).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def _check_plot_path(path: Path | None) -> None:
    """Reject a figure path before any work: unknown suffix or missing directory."""
    if path is None:
        return
    if path.suffix.lower() not in _PLOT_SUFFIXES:
        raise GradprobeError(f"--plot: {str(path)!r} has an unknown suffix; allowed: "
                             f"{', '.join(_PLOT_SUFFIXES)}")
    if not path.resolve().parent.is_dir():
        raise GradprobeError(f"--plot: directory of {str(path)!r} does not exist; "
                             "allowed: a file in an existing directory")


def _save(fig: Figure, path: Path) -> None:
    """Write a figure atomically and say where."""
    from gradprobe.report.figures import save_figure

    save_figure(fig, path)
    err.print(f"figure saved to {path}", markup=False)


def _print_theory(result: TheoryResult) -> None:
    """Print the mean-field numbers and the per-layer table (with Monte Carlo if present)."""
    status = "converged" if result.converged else (
        "diverged (q grows without bound)" if result.q_star == float("inf") else "not converged")
    out.print(table(
        f"mean field: {result.activation}",
        ["sigma_w^2", "sigma_b^2", "q*", "fixed point", "chi", "regime"],
        [[num(result.sigma_w2), num(result.sigma_b2), num(result.q_star), status,
          num(result.chi), _regime(result.chi)]]))
    mc = result.monte_carlo
    cols = ["layer l", "chi^(L-l)"] + ([f"Monte Carlo (N={mc.width}, M={mc.samples})", "std err",
                                        "z"] if mc else [])
    rows = []
    for i, predicted in enumerate(result.per_layer_ratio):
        row = [str(i + 1), num(predicted)]
        if mc is not None:
            mean, se = mc.per_layer_ratio[i], mc.stderr[i]
            row += [num(mean), num(se), num((mean - predicted) / se, 2) if se > 1e-12 * abs(mean) else "-"]
        rows.append(row)
    out.print(table("E|grad_l|^2 / E|grad_L|^2 (layer 1 = input side)", cols, rows))


def _regime(gain: float) -> str:
    """Name the phase: ordered (vanishing), edge of chaos, chaotic (exploding)."""
    if abs(gain - 1.0) <= 1e-2:
        return "edge of chaos (|chi - 1| <= 0.01)"
    return "ordered: gradients vanish" if gain < 1 else "chaotic: gradients explode"


def theory(
    activation: Annotated[str, typer.Option("--activation", help="Elementwise activation, e.g. tanh.")],
    depth: Annotated[int, typer.Option("--depth", help="Number of layers L.")],
    init: Annotated[str | None, typer.Option("--init", help="Initialiser; gives sigma_w^2.")] = None,
    sigma_w2: Annotated[float | None, typer.Option("--sigma-w2", help="fan_in * Var(W_ij).")] = None,
    sigma_b2: Annotated[float, typer.Option("--sigma-b2", help="Var(b_i).")] = 0.0,
    width: Annotated[int | None, typer.Option("--width", help="Width N: enables Monte Carlo.")] = None,
    mc_samples: Annotated[int, typer.Option("--mc-samples", help="Monte Carlo networks.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Monte Carlo seed.")] = 0,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Mean-field q*, chi and chi^(L-l); with --width a Monte Carlo check over random networks."""
    from gradprobe.theory import predict, sigma_w2_for_init

    if (init is None) == (sigma_w2 is None):
        raise GradprobeError(f"theory: --init={init!r} and --sigma-w2={sigma_w2!r}; "
                             "allowed: exactly one of them")
    _check_plot_path(plot)
    if init is not None:
        sigma_w2 = sigma_w2_for_init(init, width)
    assert sigma_w2 is not None
    result = predict(activation, sigma_w2, sigma_b2, depth=depth, width=width,
                     mc_samples=mc_samples, seed=seed)
    if plot is not None:
        from gradprobe.plots.theory import chi_vs_sigma

        names = list(dict.fromkeys([result.activation, *_DEFAULT_CHI_ACTIVATIONS]))
        _save(chi_vs_sigma(names, result.sigma_b2), plot)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print_theory(result)


def decay(
    activation: Annotated[list[str], typer.Option("--activation", help="Activation (repeatable).")],
    x: Annotated[list[float], typer.Option("--x", help="Pre-activation value (repeatable).")],
    steps: Annotated[int, typer.Option("--steps", help="Number of chained layers.")] = 6,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Running product of phi'(x) over n layers: how fast a gradient shrinks at a fixed x."""
    from gradprobe.theory import decay_chains

    if steps < 1 or steps > 1000:
        raise GradprobeError(f"decay.steps: {steps!r} is out of range; allowed: integers 1..1000")
    _check_plot_path(plot)
    chains = decay_chains(activation, x, steps)
    if plot is not None:
        from gradprobe.plots.activations import derivative_decay

        _save(derivative_decay(chains), plot)
    if as_json:
        typer.echo(json.dumps({"chains": [{**c, "products": [json_number(p) for p in c["products"]]}
                                          for c in chains]}))
        return
    print_decay("running product of phi'(x) over n layers", chains, steps)


def print_decay(title: str, chains: list[dict[str, Any]], steps: int) -> None:
    """The decay table: one row per (activation, x), one column per number of layers."""
    cols = ["activation", "x"] + [f"n={n}" for n in range(1, steps + 1)]
    rows = [[str(c["activation"]), num(c["x"])] + [num(p, 3) for p in c["products"]] for c in chains]
    out.print(table(title, cols, rows))


def register(app: typer.Typer) -> None:
    """Add ``theory`` and ``decay`` to the app."""
    app.command()(theory)
    app.command()(decay)


__all__ = ["register"]

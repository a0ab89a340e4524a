"""The ``gradprobe`` command: a typer app whose subcommands live in sibling modules."""

from __future__ import annotations

import logging
import sys

import typer

from gradprobe.cli import run as run_cmd
from gradprobe.cli import storecmd
from gradprobe.cli.console import err
from gradprobe.errors import GradprobeError

app = typer.Typer(
    name="gradprobe",
    help="See, measure and diagnose vanishing and exploding gradients in PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_cmd.register(app)
storecmd.register(app)


def main() -> None:
    """Console-script entry point: bad input is one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except GradprobeError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors (unknown option, bad int) carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


__all__ = ["app", "main"]

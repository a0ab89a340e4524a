"""The ``gradprobe`` command: a typer app whose subcommands live in sibling modules."""

from __future__ import annotations

import logging
import signal
import sys
from typing import NoReturn

import typer

from gradprobe.cli import coord as coord_cmd
from gradprobe.cli import diagnose as diagnose_cmd
from gradprobe.cli import report as report_cmd
from gradprobe.cli import run as run_cmd
from gradprobe.cli import storecmd
from gradprobe.cli import sweep as sweep_cmd
from gradprobe.cli import theory as theory_cmd
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
report_cmd.register(app)
storecmd.register(app)
sweep_cmd.register(app)
theory_cmd.register(app)
diagnose_cmd.register(app)
coord_cmd.register(app)


_SIGNAL_EXIT: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report it
_received: list[int] = []  # exit codes of the signals that arrived in this process


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised as a KeyboardInterrupt so run writers record ``interrupted``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.exit_code = _SIGNAL_EXIT.get(signum, 130)


def _on_signal(signum: int, frame: object) -> None:
    error = Interrupted(signum)
    _received.append(error.exit_code)
    raise error


def _fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` as one unwrapped line on stderr and exit with ``code``."""
    err.print(f"error: {' '.join(message.split())}", markup=False, soft_wrap=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    code = _received[0] if _received else 130
    err.print("terminated" if code == 143 else "interrupted", markup=False)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: bad input is one line on stderr and exit code 2.

    SIGINT ends with code 130 and SIGTERM with 143; a run in progress is recorded as ``interrupted``.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for signum in _SIGNAL_EXIT:
        signal.signal(signum, _on_signal)
    try:
        code = app(standalone_mode=False)  # typer returns 130 itself after a KeyboardInterrupt
    except GradprobeError as exc:
        _fail(str(exc), 2)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except typer.TyperException as exc:  # usage errors: unknown option, bad int, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _fail(message, getattr(exc, "exit_code", 2))
    except OSError as exc:  # unwritable store, full disk: not a bug, so no traceback
        _fail(f"{exc.filename or 'file'}: {exc.strerror or exc}", 1)
    if _received:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


__all__ = ["app", "main"]

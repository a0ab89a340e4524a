"""Run the real ``gradprobe`` entry point in child processes, fast.

Starting Python and importing torch takes seconds on a busy machine, which would leave no time
for killing runs at random moments. So children are forked from a multiprocessing forkserver
that imported ``gradprobe.cli.main`` once; each child then runs ``main()`` with its own argv,
stdout/stderr files and environment, exactly like the console script (exit codes included).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(["gradprobe.cli.main"])


def _child(args: list[str], out: str, err: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["gradprobe", *args]
    from gradprobe.cli.main import main

    main()


@dataclass
class Child:
    """A running ``gradprobe`` process and the files its output goes to."""

    process: mp.process.BaseProcess
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def wait(self, timeout: float = 180) -> int:
        """Wait for the exit code (negative: killed by that signal)."""
        self.process.join(timeout)
        assert self.process.exitcode is not None, f"gradprobe did not end within {timeout} s"
        return self.process.exitcode

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


def start(args: list[str], logs: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``gradprobe ARGS`` in a child process; output goes to files in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    out, err = logs / f"{n}.out", logs / f"{n}.err"
    environment = {"OMP_NUM_THREADS": "1", "MPLBACKEND": "agg", "COLUMNS": "200", **(env or {})}
    process = _CTX.Process(target=_child, args=(args, str(out), str(err), environment))
    process.start()
    return Child(process, out, err)


def run(args: list[str], logs: Path, env: dict[str, str] | None = None, timeout: float = 180) -> Child:
    """Run ``gradprobe ARGS`` to the end and return it (``.wait()`` gives the exit code at once)."""
    child = start(args, logs, env)
    child.wait(timeout)
    return child

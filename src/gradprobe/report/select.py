"""Turn command-line names (run ids, id prefixes, experiment names) into stored runs."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradprobe.errors import GradprobeError
from gradprobe.store.layout import RUNS_DIR, is_valid_run_id, resolve_store, sanitize_run_id
from gradprobe.store.reader import Run, load_run, read_run_docs

__all__ = ["REPORTS_DIR", "latest_batch", "report_dir", "resolve_runs"]

REPORTS_DIR = "reports"
_STAMP = re.compile(r"\d{8}-\d{6}")


def _batch_key(run_id: str, meta: dict[str, Any]) -> str:
    """Return the invocation a run belongs to; a run without a batch is an invocation of its own."""
    return str(meta.get("batch") or f"run:{run_id}")


def latest_batch(docs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Return the run ids of the newest invocation (batch) among ``(run_id, run.json)`` pairs.

    The newest batch is the one whose latest run was created last (ties: the larger batch id).

    Args:
        docs: runs of one experiment, as ``read_run_docs`` returns them.

    Returns:
        Run ids of that batch in creation order (then id order).
    """
    batches: dict[str, list[tuple[str, str]]] = {}
    for run_id, doc in docs:
        meta = doc.get("meta") or {}
        batches.setdefault(_batch_key(run_id, meta), []).append((str(meta.get("created", "")), run_id))
    newest = max(batches, key=lambda b: (max(c for c, _ in batches[b]), b))
    return [run_id for _, run_id in sorted(batches[newest])]


def resolve_runs(args: Sequence[str], store: str | os.PathLike[str] | None = None) -> list[Run]:
    """Return the runs named by ``args``, in order, each at most once.

    Each argument is tried as an exact run id, then as an experiment name (meaning the runs of
    that experiment's latest invocation, i.e. the newest ``meta["batch"]``), then as a unique
    prefix of a run id.

    Args:
        args: run ids, run-id prefixes or experiment names.
        store: store root; None for ``$GRADPROBE_STORE`` or the default.

    Returns:
        The runs, in argument order.

    Raises:
        GradprobeError: if ``args`` is empty, or an argument names no run or several by prefix.
    """
    if not args:
        raise GradprobeError("runs: give at least one run id, run-id prefix or experiment name")
    root = resolve_store(store)
    docs = read_run_docs(root)
    ids = {run_id for run_id, _ in docs}
    by_experiment: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for run_id, doc in docs:
        name = str((doc.get("meta") or {}).get("experiment"))
        by_experiment.setdefault(name, []).append((run_id, doc))
    chosen: list[str] = []
    for arg in args:
        if arg in ids:
            found = [arg]
        elif arg in by_experiment:
            found = latest_batch(by_experiment[arg])
        elif is_valid_run_id(arg):
            found = [load_run(arg, root).run_id]  # raises for absent or ambiguous prefixes
        else:
            raise GradprobeError(
                f"runs: {arg!r} is neither a run id nor an experiment in store {root}; "
                "see 'gradprobe ls'"
            )
        chosen += [run_id for run_id in found if run_id not in chosen]
    return [Run(root / RUNS_DIR / run_id) for run_id in chosen]


def _stamp(run: Run) -> str:
    """Return ``YYYYMMDD-HHMMSS`` of a run's batch (else of its creation time, else empty)."""
    for text in (str(run.meta.get("batch") or ""), run.run_id):
        found = _STAMP.search(text)
        if found:
            return found.group(0)
    digits = re.sub(r"\D", "", str(run.meta.get("created") or ""))
    return f"{digits[:8]}-{digits[8:14]}" if len(digits) >= 14 else ""


def report_dir(runs: Sequence[Run], store: str | os.PathLike[str] | None = None) -> Path:
    """Return the default report folder ``<store>/reports/<experiment>-<batch stamp>``.

    Several experiments are joined with ``-``; the stamp is the newest among the runs.

    Raises:
        GradprobeError: if ``runs`` is empty.
    """
    if not runs:
        raise GradprobeError("runs: a report needs at least one run")
    names = dict.fromkeys(str(r.meta.get("experiment") or "custom") for r in runs)
    stamp = max(_stamp(r) for r in runs)
    name = sanitize_run_id("-".join(names))[:96] + (f"-{stamp}" if stamp else "")
    return resolve_store(store) / REPORTS_DIR / name

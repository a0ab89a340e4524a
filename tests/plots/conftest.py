"""Small real runs, trained once per session, for the figure tests."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from gradprobe.store.reader import Run, list_runs, load_run
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_experiment

matplotlib.use("agg")


@pytest.fixture(scope="session")
def plot_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with circles-deep (3 arms, 3 epochs, 6 weight matrices) and a short spiral."""
    store = tmp_path_factory.mktemp("plots-store")
    # depth 5 gives layers.0 .. layers.10, so a string sort of layer names would be wrong
    run_experiment(load_experiment("circles-deep", ["train.epochs=3", "model.depth=5"]), store)
    run_experiment(load_experiment("spiral", ["train.iterations=120", "train.eval_every=40",
                                              "record.hist_every=60"]), store)
    return store


def _runs(store: Path, experiment: str) -> list[Run]:
    table = list_runs(store)
    return [load_run(r, store) for r in table.loc[table["experiment"] == experiment, "run_id"]]


@pytest.fixture(scope="session")
def circles(plot_store: Path) -> list[Run]:
    """The circles-deep runs: sigmoid, tanh, relu (one seed each), in training order."""
    return _runs(plot_store, "circles-deep")


@pytest.fixture(scope="session")
def spiral(plot_store: Path) -> list[Run]:
    """The spiral runs: sigmoid, relu."""
    return _runs(plot_store, "spiral")

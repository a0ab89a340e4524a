"""The Ray executor on a real local Ray instance (2 CPUs): same aggregates as local, killed workers retried."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from gradprobe.errors import GradprobeError
from gradprobe.store.reader import read_run_docs
from gradprobe.sweep import SweepOptions, aggregate_sweep, collect, load_sweep, run_sweep
from gradprobe.sweep.grid import config_hash
from gradprobe.train.config import RunConfig


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[object]:
    """One local Ray instance for the module; run_sweep joins it and leaves it running."""
    ray = pytest.importorskip("ray")
    # The kill hook below lives in this test module, which Ray workers cannot import by name.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_matches_local(ray_instance: object, tiny: str, tmp_path: Path) -> None:
    sweep = load_sweep(tiny)
    run_sweep(sweep, tmp_path / "local")
    outcome = run_sweep(sweep, tmp_path / "ray", SweepOptions(executor="ray", workers=2))
    assert len(outcome.ran) == 8 and not outcome.errors
    pd.testing.assert_frame_equal(aggregate_sweep(sweep, tmp_path / "local"),
                                  aggregate_sweep(sweep, tmp_path / "ray"), check_exact=True)


class _KillOnce:
    """Kill the worker process (no exception, no cleanup) at the first seed-1 configuration."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, cfg: RunConfig) -> None:
        if cfg.seed != 1:
            return
        try:  # O_EXCL: of two workers reaching seed 1 at once, exactly one claims the kill
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)


@pytest.mark.ray
def test_killed_worker_is_retried_and_finished_configs_kept(ray_instance: object, tiny: str,
                                                             tmp_path: Path) -> None:
    sweep, store, marker = load_sweep(tiny), tmp_path / "store", tmp_path / "killed"
    # Groups of two: (seed 0, seed 1) of one grid point, so the kill comes after seed 0 finished.
    options = SweepOptions(executor="ray", workers=2, group_size=2, hook=_KillOnce(marker))
    outcome = run_sweep(sweep, store, options)
    assert marker.exists() and not outcome.errors
    # Every configuration has exactly one run in the store, and it finished.
    docs = read_run_docs(store)
    assert len(docs) == 8 and all(doc["status"] == "finished" for _, doc in docs)
    assert sorted(config_hash(doc["config"]) for _, doc in docs) == sorted(i.config_hash for i in sweep.items)
    # The killed attempt had finished seed 0 of its group; the retry skipped it and returned only seed 1.
    assert len(outcome.ran) == 7
    assert len(collect(sweep, store)) == 8


def test_missing_ray_names_the_install_command(tiny: str, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(GradprobeError, match=r"pip install gradprobe\[ray\]"):
        run_sweep(load_sweep(tiny), tmp_path / "store", SweepOptions(executor="ray"))
    assert not (tmp_path / "store").exists()

"""``gradprobe report``, ``gradprobe export tensorboard`` and ``run --tensorboard`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from gradprobe.cli.main import app
from gradprobe.errors import GradprobeError
from gradprobe.store.reader import Run, list_runs, load_run


def invoke(*args: str) -> tuple[str, str]:
    """Run a command in this process (no start-up cost) and return its stdout and stderr."""
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout, res.stderr


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], Path]]:
    """Stand in for save_figures (matplotlib takes seconds per run) and record its calls."""
    import gradprobe.report.figures as module

    calls: list[tuple[list[str], Path]] = []

    def save(runs: list[Run], out_dir: Path) -> list[Path]:
        calls.append(([r.run_id for r in runs], Path(out_dir)))
        (Path(out_dir) / "fig.png").write_bytes(b"png")
        return [Path(out_dir) / "fig.png"]

    monkeypatch.setattr(module, "save_figures", save)
    return calls


def test_report_and_export_commands(make_run, store: Path, tmp_path: Path, figures,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [make_run("exp", arm, batch="exp.batch.20261123-191212.53da") for arm in "ab"]
    stdout, _ = invoke("report", "exp")
    page = store / "reports" / "exp-20261123-191212" / "report.html"
    assert f"report: {page}" in stdout and page.stat().st_size > 4_000_000
    assert figures == [([r.run_id for r in runs], page.parent)] and "1 figure file(s)" in stdout
    assert f'"id":"{runs[1].run_id}"' in page.read_text(encoding="utf-8")

    invoke("report", runs[0].run_id, "--out", "mine")
    text = (tmp_path / "mine" / "report.html").read_text(encoding="utf-8")
    assert runs[0].run_id in text and runs[1].run_id not in text

    stdout, _ = invoke("export", "tensorboard", "exp", "--logdir", "tb")
    for run in runs:
        folder = Path("tb") / "exp" / run.meta["arm"] / "seed0"
        assert f"{run.run_id} -> {folder}" in stdout
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        stored = run.frame(kind="grad", stat="mean_abs", layer="layers.2")
        stored = stored[stored.tensor == "bias"]["value"].tolist()
        got = [e.value for e in acc.Scalars("grad/mean_abs/layers/2/bias")]
        assert len(got) == len(stored) == 20
        assert max(abs(g - s) / s for g, s in zip(got, stored)) < 1e-6

    with pytest.raises(GradprobeError, match="'nope' not found") as info:  # main() prints it, exits 2
        CliRunner().invoke(app, ["report", "exp", "nope", "--out", "bad"], catch_exceptions=False)
    assert "\n" not in str(info.value) and not (tmp_path / "bad").exists()


def test_run_writes_report_and_live_tensorboard(store: Path, tmp_path: Path, figures,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = {"name": "tiny", "data": {"name": "circles", "n_samples": 64},
              "model": {"depth": 2, "width": 4}, "train": {"epochs": 2, "batch_size": 32},
              "record": {"hist_every": "epoch"},
              "arms": [{"name": "tanh", "model": {"activation": "tanh"}},
                       {"name": "relu", "model": {"activation": "relu"}}]}
    Path("tiny.yaml").write_text(yaml.safe_dump(config))
    stdout, stderr = invoke("run", "tiny.yaml", "--json", "--tensorboard", "tb")
    doc = json.loads(stdout)  # stdout stays exactly one JSON object
    pages = list((store / "reports").glob("tiny-*/report.html"))
    assert len(pages) == 1 and f"report: {pages[0]}" in stderr
    text = pages[0].read_text(encoding="utf-8")
    assert all(arm["run_id"] in text for arm in doc["arms"])
    assert figures == [([arm["run_id"] for arm in doc["arms"]], pages[0].parent)]
    for arm in doc["arms"]:
        acc = EventAccumulator(str(tmp_path / "tb" / "tiny" / arm["name"] / "seed0"),
                               size_guidance={"scalars": 0})
        acc.Reload()
        loss = load_run(arm["run_id"], store).metrics().query("split == 'train' and metric == 'loss'")
        got = [e.value for e in acc.Scalars("metrics/train/loss")]
        assert len(got) == len(loss) >= 3
        assert max(abs(g - s) / s for g, s in zip(got, loss["value"])) < 1e-6

    stdout, stderr = invoke("run", "tiny.yaml", "--no-report")
    assert "report:" not in stdout + stderr and len(list_runs(store)) == 4
    assert len(list((store / "reports").iterdir())) == 1 and len(figures) == 1

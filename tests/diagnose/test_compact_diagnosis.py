"""The compact terminal diagnosis (issue 14): one line per layer, remedies once per verdict, 80 columns.

Diagnoses come from real small runs under a Probe. The number on each line is parsed back and compared
with the one the test picks from ``LayerVerdict.numbers`` itself (and, for the sigmoid stack, with the
error ratio measured from retained gradients); ``--verbose`` is pinned to the text ``str(Diagnosis)``
gave before the compact form existed, reproduced here.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradprobe.watcher as watch_module
from gradprobe.cli.main import app
from gradprobe.data.datasets import load_dataset
from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.verdicts import PRECEDENCE, Diagnosis, LayerVerdict
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe
from gradprobe.store.reader import load_run
from gradprobe.store.writer import RunWriter
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer

WIDTH = 80
_BUILT: dict[str, Diagnosis] = {}  # each run trains once per session, whichever test asks first


def _unit_normal(w: torch.Tensor) -> object:
    return nn.init.normal_(w, 0.0, 1.0)


def _sigmoid(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.Sigmoid, 8, 16, init=_unit_normal)
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.5), steps=30)
    result = diagnose(probe)
    result.oracle = cases.median_ratio(rec.delta["0"], rec.delta["15"])  # type: ignore[attr-defined]
    return result


def _dead(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.ReLU, 4, 16)
    with torch.no_grad():
        model[4].bias.fill_(-100.0)
    return diagnose(cases.train(model, torch.optim.Adam(model.parameters(), lr=1e-3), steps=30)[0])


def _saturated(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.Tanh, 3, 16, init=lambda w: nn.init.normal_(w, 0.0, 3.0))
    return diagnose(cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01), steps=30)[0])


def _mixed(cases: Any) -> Diagnosis:
    """The sigmoid stack with a near-zero learning rate for 14.weight: vanishing and stalled layers."""
    model = cases.mlp(nn.Sigmoid, 8, 16, init=_unit_normal)
    rest = [p for n, p in model.named_parameters() if not n.startswith("14.")]
    opt = torch.optim.SGD([{"params": model[14].parameters(), "lr": 1e-9}, {"params": rest}], lr=0.5)
    return diagnose(cases.train(model, opt, steps=30)[0])


def _stalled(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.ReLU, 4, 16, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    rest = [p for n, p in model.named_parameters() if not n.startswith("0.")]
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 1e-9}, {"params": rest}], lr=1e-2)
    return diagnose(cases.train(model, opt, steps=30)[0])


def _unstable(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.ReLU, 3, 16, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    return diagnose(cases.train(model, torch.optim.SGD(model.parameters(), lr=0.01), steps=20, poison=7)[0])


def _fit(model: nn.Module, steps: int = 20, lr: float = 0.5) -> Probe:
    torch.manual_seed(1)
    x, y = torch.randn(64, 8), torch.rand(64, 1).round()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    with Probe(model, opt) as probe:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            opt.step()
    return probe


def _frozen(cases: Any) -> Diagnosis:
    model = cases.mlp(nn.Sigmoid, 6, 8, init=_unit_normal)
    model[6].requires_grad_(False)
    return diagnose(_fit(model))


def _long_names(cases: Any) -> Diagnosis:
    """A sigmoid stack named like a transformer's: ``bert_encoder_stack.layer.3.attention.self.query.weight``."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(OrderedDict(attention=nn.Sequential(OrderedDict(
        self=nn.Sequential(OrderedDict(query=nn.Linear(8, 8), act=nn.Sigmoid())))))) for _ in range(6)]
    model = nn.Sequential(OrderedDict(bert_encoder_stack=nn.Sequential(OrderedDict(layer=nn.Sequential(*blocks))),
                                      classifier_head_projection=nn.Linear(8, 1)))
    for p in model.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, 0.0, 1.0)
        else:
            nn.init.zeros_(p)
    return diagnose(_fit(model))


BUILDERS: dict[str, Callable[[Any], Diagnosis]] = {
    "sigmoid": _sigmoid, "mixed": _mixed, "dead": _dead, "saturated": _saturated, "stalled": _stalled,
    "unstable": _unstable, "frozen": _frozen, "long_names": _long_names}


def _built(cases: Any, name: str) -> Diagnosis:
    if name not in _BUILT:
        _BUILT[name] = BUILDERS[name](cases)
    return _BUILT[name]


def _expected(e: LayerVerdict) -> tuple[str | None, float | None]:
    """What the line must show, picked from the numbers: (kind of number, value), independently of the library."""
    n = e.numbers
    flow = [(k, n[f"{k}_ratio"]) for k in ("stream", "grad") if f"{k}_ratio" in n]
    if e.verdict == "frozen":
        return None, None
    if e.verdict == "unstable":
        return ("step", n["first_step"]) if "first_step" in n else (None, None)
    if e.verdict == "dead" and "dead_frac" in n:
        return "pct", n["dead_frac"]
    if e.verdict == "saturated" and "saturated_frac" in n:
        return "pct", n["saturated_frac"]
    if e.verdict != "stalled" and "error_ratio" in n:
        return "ratio", n["error_ratio"]
    if e.verdict != "stalled" and flow:
        pick = {"exploding": max, "healthy": lambda f, key: f[0]}.get(e.verdict, min)
        return "ratio", pick(flow, key=lambda kv: kv[1])[1]
    return ("sci", n["update_ratio"]) if "update_ratio" in n else (None, None)


def _parse(kind: str, line: str) -> float:
    """The number of ``kind`` printed on a layer line."""
    patterns = {"pct": r" (\d+)%", "step": r"from step (\d+)", "sci": r" (-?\d\.\de[+-]\d+)",
                "ratio": r" (1/[\d.e+]+|[\d.e+]+x|0)(?: |$)"}
    found = re.search(patterns[kind], line)
    assert found, (kind, line)
    text = found.group(1)
    if kind == "pct":
        return float(text) / 100
    if text.startswith("1/"):
        return 1 / float(text[2:])
    return float(text.rstrip("x"))


def _layer_lines(d: Diagnosis) -> list[str]:
    lines = d.compact().splitlines()
    assert lines[0] == f"gradprobe diagnosis: {d.verdict}"
    assert lines[1].split() == ["layer", "verdict", "number", "window"]
    return lines[2:2 + len(d.layers)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fits_80_columns_and_is_the_default_text(cases, name) -> None:
    d = _built(cases, name)
    text = str(d)
    assert text == d.compact()
    assert all(len(line) <= WIDTH for line in text.splitlines()), max(text.splitlines(), key=len)
    assert max(map(len, d.verbose().splitlines())) > WIDTH  # what the compact form is for


@pytest.mark.parametrize("name", list(BUILDERS))
def test_one_line_per_layer_in_depth_order_with_verdict_number_and_window(cases, name) -> None:
    d = _built(cases, name)
    lines = _layer_lines(d)
    after = d.compact().splitlines()[2 + len(d.layers):]
    assert not after or not after[0].startswith("  ") or after[0].startswith("  note:")  # no extra layer line
    for e, line in zip(d.layers, lines, strict=True):
        shown = line.split()[0]
        assert shown == e.layer or (shown.startswith("...") and e.layer.endswith("." + shown[3:])), (shown, e.layer)
        assert line.split()[1] == e.verdict
        kind, value = _expected(e)
        if kind is None:
            assert "step " not in line or e.verdict == "unstable"
        elif kind == "step":
            assert int(_parse(kind, line)) == value
        elif kind == "pct":
            assert _parse(kind, line) == pytest.approx(value, abs=0.005)
        elif value == 0:
            assert _parse(kind, line) == 0
        else:
            assert _parse(kind, line) == pytest.approx(value, rel=0.05), line  # 2 significant digits
        steps = e.numbers.get("nonfinite_steps", e.numbers.get("steps"))
        assert line.rstrip().endswith(f" {steps} steps" if steps is not None else " -")


def test_the_sigmoid_stack_shows_the_measured_error_ratio(cases) -> None:
    d = _built(cases, "sigmoid")
    assert d.verdict == "vanishing" and d.layers[0].verdict == "vanishing"
    oracle = d.oracle  # type: ignore[attr-defined]  # from retained output gradients, not the probe
    assert _parse("ratio", _layer_lines(d)[0]) == pytest.approx(oracle, rel=0.01)


def test_explained_layers_name_their_cause(cases) -> None:
    d = _built(cases, "dead")
    first = d.layer("0.weight")
    assert first.verdict == "dead" and first.numbers["explained_by"] == "4.weight"
    assert _layer_lines(d)[0].split()[2:5] == ["error", "0", "via"] and " via 4.weight " in _layer_lines(d)[0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_remedy_once_ranked_per_verdict(cases, name) -> None:
    d = _built(cases, name)
    flat = " ".join(d.compact().split())  # remedies wrap over lines
    remedies = {r for e in d.layers for r in e.remedies}
    for remedy in remedies:
        assert flat.count(" ".join(remedy.split())) == 1, remedy
    verdicts = [v for v in PRECEDENCE if any(e.verdict == v and e.remedies for e in d.layers)]
    heads = [line.split(" (")[0] for line in d.compact().splitlines() if line.endswith("most promising first:")]
    assert heads == verdicts
    if not remedies:
        return
    # Ranked: when every layer with the lead verdict lists the same remedies, they come in that order.
    lead = [e.remedies for e in d.layers if e.verdict == verdicts[0]]
    if all(r == lead[0] for r in lead):
        start = d.compact().index(f"{verdicts[0]} (")
        spots = [flat.index(" ".join(r.split()), flat.index(" ".join(d.compact()[start:].split()[:2])))
                 for r in lead[0]]
        assert spots == sorted(spots)
        numbered = re.findall(r"^  (\d+)\. ", d.compact()[start:], flags=re.M)[:len(lead[0])]
        assert numbered == [str(i) for i in range(1, len(lead[0]) + 1)]


def test_mixed_remedy_lists_rank_by_mean_position(cases) -> None:
    d = _built(cases, "dead")
    groups = [e.remedies for e in d.layers if e.verdict == "dead"]
    assert len({tuple(g) for g in groups}) > 1  # the layer with the -100 bias ranks the bias first
    seen = list(dict.fromkeys(r for g in groups for r in g))
    mean = {r: sum(g.index(r) if r in g else len(g) for g in groups) / len(groups) for r in seen}
    want = sorted(seen, key=lambda r: (mean[r], seen.index(r)))
    flat = " ".join(d.compact().split())
    assert [flat.index(r) for r in want] == sorted(flat.index(r) for r in want)


def test_a_remedy_shared_by_two_verdicts_is_named_once_and_referred_back_to(cases) -> None:
    d = _built(cases, "mixed")
    assert d.layer("14.weight").verdict == "stalled" and d.layer("0.weight").verdict == "vanishing"
    first = d.layer("0.weight").remedies
    assert all(e.remedies == first for e in d.layers if e.verdict == "vanishing")
    shared = [r for r in d.layer("14.weight").remedies if r in first]
    assert shared
    text = d.compact()
    stalled = text[text.index("stalled (1 layer)"):]
    for remedy in shared:
        assert f". same as vanishing {first.index(remedy) + 1}" in stalled
        assert " ".join(remedy.split()) not in " ".join(stalled.split())


def test_long_layer_names_keep_their_tail(cases) -> None:
    d = _built(cases, "long_names")
    assert d.verdict == "vanishing"
    assert max(len(e.layer) for e in d.layers) > 50
    shown = [line.split()[0] for line in _layer_lines(d)]
    assert any(s.startswith("...") for s in shown)
    for s, e in zip(shown, d.layers):
        assert s.endswith(".weight") and (s == e.layer or e.layer.endswith("." + s[3:]))
    assert "...layer.0.attention.self.query.weight" in shown


def test_too_narrow_a_width_is_refused(cases) -> None:
    with pytest.raises(GradprobeError, match="width: 40 is too narrow"):
        _built(cases, "sigmoid").compact(width=40)


def _old_str(d: Diagnosis) -> str:
    """``str(Diagnosis)`` before the compact form, verbatim: the reference ``--verbose`` keeps."""
    width = max((len(e.layer) for e in d.layers), default=0)
    lines = [f"gradprobe diagnosis: {d.verdict}"]
    for e in d.layers:
        head = f"  {e.layer:<{width}}  {e.verdict:<9}  "
        body = textwrap.wrap(e.evidence, 100 - len(head)) or [""]
        lines.append(head + body[0])
        lines.extend(" " * len(head) + more for more in body[1:])
        for rank, remedy in enumerate(e.remedies, 1):
            lines.append(f"{' ' * len(head)}{rank}. {remedy}")
    lines.extend(f"  note: {note}" for note in d.notes)
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_verbose_is_the_old_full_text(cases, name) -> None:
    d = _built(cases, name)
    assert d.verbose() == _old_str(d)


@pytest.fixture(scope="module")
def stored_sigmoid(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A stored circles-deep sigmoid run (1 epoch, every step recorded): (store, run id)."""
    store = tmp_path_factory.mktemp("compact") / "store"
    cfg = load_experiment("circles-deep", ["train.epochs=1", "record.every=1", "model.activation=sigmoid"],
                          seeds=1).runs[0]
    with RunWriter(store, "sigmoid-run", config=cfg.model_dump(mode="json"), env={},
                   meta={"experiment": cfg.experiment, "arm": cfg.arm, "seed": cfg.seed}) as writer:
        Trainer(cfg, load_dataset(cfg.data), writer).run()
    return str(store), "sigmoid-run"


def test_cli_prints_compact_verbose_and_unchanged_json(stored_sigmoid) -> None:
    store, run_id = stored_sigmoid
    d = diagnose(load_run(run_id, store))
    assert d.verdict == "vanishing"
    runner = CliRunner()
    plain = runner.invoke(app, ["diagnose", run_id, "--store", store])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == d.compact() + "\n" and all(len(x) <= WIDTH for x in plain.stdout.splitlines())
    verbose = runner.invoke(app, ["diagnose", run_id, "--store", store, "--verbose"])
    assert verbose.exit_code == 0, verbose.output
    assert verbose.stdout == _old_str(d) + "\n"
    doc = runner.invoke(app, ["diagnose", run_id, "--store", store, "--json"])
    assert json.loads(doc.stdout) == d.to_dict() and doc.stdout.count("\n") == 1


def test_watch_prints_the_compact_diagnosis(cases, capsys) -> None:
    model = cases.mlp(nn.Sigmoid, 8, 8, init=_unit_normal)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(1)
    x, y = torch.randn(64, 8), torch.rand(64, 1).round()
    with watch_module.watch(model) as probe:
        for _ in range(15):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            opt.step()
    printed = capsys.readouterr().err
    assert printed == diagnose(probe).compact() + "\n"
    assert all(len(line) <= WIDTH for line in printed.splitlines())

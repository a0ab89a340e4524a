"""Live alerts: verdict changes at flushes, checked against errors, dead units and verdicts computed independently."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradprobe
from gradprobe import Probe
from gradprobe.alerts import WINDOW, Alert, GradprobeAlert, StopTraining, forward_alerts
from gradprobe.diagnose import Thresholds
from gradprobe.diagnose.engine import diagnose
from gradprobe.errors import GradprobeError
from gradprobe.probe_options import ProbeOptions
from gradprobe.store.query import query
from gradprobe.store.reader import load_run

T = Thresholds()
FLUSH = ProbeOptions().flush_every


def _mlp(act: type[nn.Module], init: str, width: int, seed: int) -> nn.Sequential:
    """2 -> 5 x width -> 1: Linear modules 0, 2, ..., 10, activations 1, 3, ..., 9."""
    torch.manual_seed(seed)
    sizes = [2] + [width] * 5 + [1]
    layers: list[nn.Module] = []
    for i in range(6):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        if init == "normal":
            nn.init.normal_(lin.weight, 0.0, 1.0)
        else:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < 5:
            layers.append(act())
    return nn.Sequential(*layers)


def _circles(n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=gen)
    return x, ((x ** 2).sum(1) < 1.4).float()[:, None]


def _step(model, opt, x, y, gen, taps):
    idx = torch.randint(0, len(x), (64,), generator=gen)
    kept = {}
    h = x[idx]
    for i, module in enumerate(model):
        h = module(h)  # module __call__: the probe's hooks see it as in model(x)
        if i in taps:
            h.retain_grad()
            kept[i] = h
    opt.zero_grad()
    nn.functional.binary_cross_entropy_with_logits(h, y[idx]).backward()
    opt.step()
    return {i: (t.detach().double().numpy(), t.grad.double().numpy()) for i, t in kept.items()}


def _onset(steps: list[int], past: np.ndarray) -> int:
    """First step of the last stretch of ``past`` (the latest step's, else the one before it)."""
    end = int(np.nonzero(past)[0][-1])
    start = end
    while start > 0 and past[start - 1]:
        start -= 1
    return steps[start]


def test_sigmoid_net_vanishes_and_recovers_at_the_steps_its_errors_show():
    """6 sigmoid layers, N(0, 1): layers.0's error ratio (from retained grads) against the documented 1/10."""
    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)
    got: list[Alert] = []
    ratios = []
    with Probe(model, opt, on_alert=got.append) as probe:
        for _ in range(6 * FLUSH):
            kept = _step(model, opt, x, y, gen, taps=(0, 9))
            # mean |dL/dz| of layer 0's output over mean |dL/da| of the output layer's input (module 9)
            ratios.append(np.abs(kept[0][1]).mean() / np.abs(kept[9][1]).mean())
    r = np.array(ratios)
    expected, announced, held = [], "", None
    for end in range(FLUSH, len(r) + 1, FLUSH):  # one flush every FLUSH recorded steps (every step recorded)
        steps = list(range(max(0, end - WINDOW), end))
        now = "vanishing" if np.median(r[steps]) < T.vanishing_ratio else "healthy"
        below = r[steps] < T.vanishing_ratio
        alert = (_onset(steps, below if now == "vanishing" else ~below), now, announced, float(np.median(r[steps])))
        if (announced == "" and now == "healthy") or now == announced:
            announced, held = now, None
        elif now == "healthy" and held is None:
            held = alert  # a recovery is announced at the next flush, if that flush agrees
        else:
            expected.append(held if now == "healthy" and held is not None else alert)
            announced, held = now, None
    first = [a for a in got if a.layer == "0.weight"]
    assert [(a.step, a.verdict, a.previous) for a in first] == [e[:3] for e in expected]
    assert expected[0][1] == "vanishing" and any(e[1] == "healthy" for e in expected)  # both directions happen
    np.testing.assert_allclose([a.evidence for a in first], [e[3] for e in expected], rtol=1e-4)
    assert first[0].message.startswith(f"0 started vanishing at step {expected[0][0]} (its back-propagated error "
                                       "fell below 1/10 of the output layer's")
    assert probe.alerts == got


def test_killed_relu_units_raise_dead_at_the_first_recorded_step_after_the_kill():
    """Biases of 20 of 32 units after layer 4 set to -100 at step 100; recorded every 3 steps (99, 102, ...)."""
    model = _mlp(nn.ReLU, "he", 32, seed=3)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(2)
    got: list[Alert] = []
    dead = {}
    kill, every = 100, 3
    with Probe(model, opt, every=every, on_alert=got.append):
        for step in range(300):
            if step == kill:
                with torch.no_grad():
                    model[4].bias[:20] = -100.0
            z, _ = _step(model, opt, x, y, gen, taps=(4,))[4]
            dead[step] = float((z <= 0).all(axis=0).mean())  # NumPy mask: ReLU' = 0 for every example
    recorded = list(range(0, 300, every))
    alerts = [a for a in got if a.layer == "4.weight"]
    assert alerts and alerts[0].verdict == "dead" and alerts[0].previous == ""
    assert alerts[0].step == min(s for s in recorded if s >= kill) == 102
    # The alert fires at the first flush (FLUSH recorded steps): the units' window is its last 20%, >= 5 steps.
    window = recorded[:FLUSH]
    tail = window[-max(T.min_window, math.ceil(T.window_fraction * len(window))):]
    assert alerts[0].evidence == pytest.approx(np.median([dead[s] for s in tail]), abs=1e-6)
    assert alerts[0].evidence >= 20 / 32
    assert "of 5's units have been dead since step 102" in alerts[0].message


def test_healthy_relu_he_net_raises_nothing():
    model = _mlp(nn.ReLU, "he", 32, seed=4)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(2)
    got: list[Alert] = []
    with Probe(model, opt, on_alert=got.append) as probe:
        for _ in range(4 * FLUSH):
            _step(model, opt, x, y, gen, taps=())
    assert got == []
    assert diagnose(probe).verdict == "healthy"  # the engine on the whole run agrees


def test_monitor_verdicts_are_the_engines_on_each_window():
    """At every flush, the verdicts behind the alerts equal diagnose() on the tidy frame of the window's steps."""
    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)
    states = []
    probe = Probe(model, opt, alerts=True, on_alert=lambda a: None)
    for step in range(5 * FLUSH):
        _step(model, opt, x, y, gen, taps=())
        if (step + 1) % FLUSH == 0:
            states.append({k: v.verdict for k, v in probe._monitor._state.items()})
    probe.detach()
    frame = probe.frame()
    for i, state in enumerate(states):
        window = frame[(frame.step >= (i + 1) * FLUSH - WINDOW) & (frame.step < (i + 1) * FLUSH)]
        reference = diagnose(window, weight_layers=[n for n, p in model.named_parameters() if p.dim() >= 2])
        assert state == {e.layer: e.verdict for e in reference.layers}


def test_stored_alerts_are_the_callbacks_and_sql_reads_them(tmp_path):
    from gradprobe.data.datasets import load_dataset
    from gradprobe.train.env import open_run
    from gradprobe.train.experiment import load_experiment
    from gradprobe.train.loop import Trainer

    exp = load_experiment("circles-deep", ["train.epochs=6", "record.every=1"])
    cfg = exp.runs[0]  # sigmoid, N(0, 1): vanishing from the start
    got: list[Alert] = []
    forwarded: list[Alert] = []
    with open_run(tmp_path, "alerts-run", cfg, None) as writer, forward_alerts(forwarded.append):
        Trainer(cfg, load_dataset(cfg.data), writer, on_alert=got.append).run()
    assert got and any(a.verdict == "vanishing" for a in got)
    assert forwarded == got  # what `gradprobe run` prints above its progress bars
    sql = query("SELECT step, layer, verdict, previous, message, value FROM alerts "
                "WHERE run_id = 'alerts-run' ORDER BY step, layer", tmp_path)
    mine = sorted(got, key=lambda a: (a.step, a.layer))
    assert list(sql.itertuples(index=False, name=None)) == [
        (a.step, a.layer, a.verdict, a.previous, a.message, a.evidence) for a in mine]
    stored = load_run("alerts-run", tmp_path).alerts()
    assert list(stored.columns) == ["step", "layer", "verdict", "previous", "message", "value"]
    assert sorted(stored.itertuples(index=False, name=None)) == sorted(sql.itertuples(index=False, name=None))


def test_a_run_without_alerts_reads_an_empty_frame(tmp_path):
    from gradprobe.train.env import open_run
    from gradprobe.train.experiment import load_experiment

    exp = load_experiment("circles-deep", ["train.epochs=1"])
    with open_run(tmp_path, "quiet-run", exp.runs[2], None) as writer:
        writer.add_stats(pd.DataFrame(
            {"step": [0], "layer": ["a"], "tensor": ["weight"], "kind": ["grad"], "stat": ["norm"], "value": [1.0]}))
    frame = load_run("quiet-run", tmp_path).alerts()
    assert frame.empty and list(frame.columns) == ["step", "layer", "verdict", "previous", "message", "value"]
    assert query("SELECT count(*) AS n FROM alerts", tmp_path).n.item() == 0


def test_default_channel_is_a_warning_and_a_log_record(caplog):
    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)
    with caplog.at_level(logging.INFO, logger="gradprobe.alerts"), pytest.warns(GradprobeAlert) as caught:
        with Probe(model, opt) as probe:
            for _ in range(FLUSH):
                _step(model, opt, x, y, gen, taps=())
    assert probe.alerts
    assert [str(w.message) for w in caught if w.category is GradprobeAlert] == [a.message for a in probe.alerts]
    assert [r.getMessage() for r in caplog.records if r.name == "gradprobe.alerts"] == [a.message for a in probe.alerts]


def test_alerts_false_is_silent():
    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradprobeAlert)
        with Probe(model, opt, alerts=False) as probe:
            for _ in range(FLUSH):
                _step(model, opt, x, y, gen, taps=())
    assert probe.alerts == [] and diagnose(probe).verdict == "vanishing"  # recorded, just not alerted


def test_stop_training_from_the_callback_ends_the_loop_at_that_flush():
    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)

    def stop(alert: Alert) -> None:
        if alert.verdict == "vanishing":
            raise gradprobe.StopTraining(alert)

    steps = 0
    with pytest.raises(StopTraining) as stopped, gradprobe.watch(model, opt, every=1, on_alert=stop,
                                                                 print_diagnosis=False) as probe:
        for _ in range(10 * FLUSH):
            _step(model, opt, x, y, gen, taps=())
            steps += 1
    assert steps == FLUSH - 1  # the FLUSH-th optimizer.step() raised: its flush found the vanishing layers
    assert probe.step_count == FLUSH
    assert stopped.value.alert is probe.alerts[0] and stopped.value.alert.verdict == "vanishing"


@pytest.mark.parametrize("bad", ["yes", 0.1])
def test_bad_alerts_option_is_one_line(bad):
    with pytest.raises(GradprobeError, match=r"^alerts: .* is not allowed; use True, False or a"):
        Probe(nn.Linear(2, 2), alerts=bad)


def test_trainer_session_stores_alerts_and_calls_back(tmp_path):
    """The session every trainer callback uses: alerts in the run's table and to on_alert, no warning."""
    from gradprobe.integrations.session import ProbeSession

    model = _mlp(nn.Sigmoid, "normal", 16, seed=0)
    x, y = _circles()
    gen = torch.Generator().manual_seed(2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    got: list[Alert] = []
    session = ProbeSession(model, every=1, store=tmp_path, run_id="session-run", on_alert=got.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradprobeAlert)
        for _ in range(FLUSH):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx]).backward()
            session.before_update()
            opt.step()
            session.after_update()
        session.finish()
    assert got and got == session.probe.alerts
    stored = load_run("session-run", tmp_path).alerts()
    assert list(stored.itertuples(index=False, name=None)) == [
        (a.step, a.layer, a.verdict, a.previous, a.message, a.evidence) for a in got]


def test_a_first_flush_without_any_statistic_the_rules_read_keeps_alerts_alive(caplog):
    """Weight norms alone (no grad/output stats yet) give no verdict and must not switch the monitor off."""
    from gradprobe.alerts import AlertMonitor

    monitor = AlertMonitor(["0.weight"])
    norms = pd.DataFrame({"step": [0], "layer": ["0"], "tensor": ["weight"], "kind": ["weight"], "stat": ["norm"],
                          "value": [1.0]})
    with caplog.at_level(logging.ERROR, logger="gradprobe.alerts"):
        assert monitor.update(norms) == []
    assert not monitor._broken and not caplog.records


def test_a_layer_flapping_at_the_limit_raises_no_recovery_until_the_next_flush_agrees():
    """20 of 32 units after layer 4 dead, alive, dead, then alive for two flushes: two alerts, not four."""
    model = _mlp(nn.ReLU, "he", 32, seed=3)
    x, y = _circles()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(2)
    alive = model[4].bias[:20].detach().clone()
    got: list[tuple[int, Alert]] = []
    dead_flushes = (0, 2)  # flush k covers steps [k * FLUSH, (k + 1) * FLUSH)
    with Probe(model, opt, every=1, on_alert=lambda a: got.append((probe.step_count, a))) as probe:
        for step in range(5 * FLUSH):
            if step % FLUSH == 0:
                with torch.no_grad():
                    model[4].bias[:20] = -100.0 if step // FLUSH in dead_flushes else alive
            _step(model, opt, x, y, gen, taps=())
    ours = [(at, a.step, a.verdict, a.previous) for at, a in got if a.layer == "4.weight"]
    # dead at flush 0; alive at flush 1 (held), dead again at flush 2 (no alert: it never recovered);
    # alive at flushes 3 and 4: announced at flush 4 with the onset flush 3 saw
    assert ours == [(FLUSH, 0, "dead", ""), (5 * FLUSH, 3 * FLUSH, "healthy", "dead")]

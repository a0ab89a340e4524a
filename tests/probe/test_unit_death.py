"""Per-unit death and saturation (gradprobe.units) against NumPy on the activations the test keeps itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from gradprobe.errors import GradprobeError
from gradprobe.plots.unit_death import RASTER_MAX_UNITS, unit_death, unit_states
from gradprobe.probe import Probe, ProbeOptions
from gradprobe.report.figures import save_figure
from gradprobe.store import Run, RunWriter, query
from gradprobe.store.reader import part_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVERY = 3  # record every third step: the units' times are recorded steps only


class Kept:
    """A forward hook of the test's own: the output (and input) of every call, per step, as float64 NumPy."""

    def __init__(self, module: nn.Module) -> None:
        self.calls: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.step = 0
        self.keep = True
        module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.keep:
            self.calls.setdefault(self.step, []).append(
                (inputs[0].detach().double().numpy(), output.detach().double().numpy()))


def reference(masks: dict[int, np.ndarray]) -> pd.DataFrame:
    """last_fired, first_dead, dead_since per unit from per-step dead masks {step: (units,) bool}, by NumPy."""
    steps = sorted(masks)
    dead = np.stack([masks[s] for s in steps])  # (S, units)
    step_col = np.array(steps)[:, None]
    last = np.where(~dead, step_col, -1).max(0)
    first = np.where(dead, step_col, np.iinfo(np.int64).max).min(0)
    first = np.where(first == np.iinfo(np.int64).max, -1, first)
    since = np.full(dead.shape[1], -1)
    for u in range(dead.shape[1]):  # start of the final dead streak, walking back from the end
        i = len(steps) - 1
        while i >= 0 and dead[i, u]:
            since[u] = steps[i]
            i -= 1
    return pd.DataFrame({"last_fired": last, "first_dead": first, "dead_since": since})


def relu_dead(calls: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Dead in every call: no example of any call with a positive output (ReLU's derivative is 0 at <= 0)."""
    return np.concatenate([out for _, out in calls]).reshape(sum(len(o) for _, o in calls), -1).max(0) <= 0


def _compare(frame: pd.DataFrame, layer: str, ref: pd.DataFrame, observed: int) -> None:
    got = frame[frame["layer"] == layer].sort_values("unit")
    for col in ("last_fired", "first_dead", "dead_since"):
        np.testing.assert_array_equal(got[col].to_numpy("int64"), ref[col].to_numpy(), err_msg=col)
    assert set(got["observed_steps"]) == {observed}


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def test_killed_and_revived_units_match_numpy() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kept = Kept(model[1])
    gen = torch.Generator().manual_seed(1)
    saved = model[0].bias.detach().clone()
    kills = {4: [2, 5], 10: [7], 13: [11]}  # step -> units of layer 0 whose bias is set very negative
    with Probe(model, opt, every=EVERY) as probe:
        for step in range(24):
            kept.step = step
            with torch.no_grad():
                for unit in kills.get(step, []):
                    model[0].bias[unit] = -1e4
                if step == 16:  # unit 7 comes back
                    model[0].bias[7] = saved[7] + 10.0
            x = torch.randn(32, 6, generator=gen)
            kept.keep = False
            model(1e5 * torch.sign(model[0].weight.detach()))  # fires every unit, but backward never reaches it
            kept.keep = True
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), torch.randint(0, 3, (32,), generator=gen)).backward()
            opt.step()
    frame = probe.units()
    masks = {s: relu_dead(c) for s, c in kept.calls.items() if s % EVERY == 0}
    ref = reference(masks)
    _compare(frame, "1", ref, len(masks))
    assert ref.loc[[2, 5], "dead_since"].tolist() == [6, 6] and ref.loc[11, "dead_since"] == 15  # as designed
    assert ref.loc[7, "first_dead"] == 12 and ref.loc[7, "dead_since"] == -1 and ref.loc[7, "last_fired"] == 21


def test_calls_of_one_step_pool_dead_only_if_dead_in_every_call() -> None:
    """Gradient accumulation over two micro-batches, the second a second call of the same modules."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 1))
    with torch.no_grad():  # units 0-1 fire on x > 0 only, 2-3 on x < 0 only, 4-5 never
        model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1], [-1, -1], [-1, -1]]))
        model[0].bias.copy_(torch.tensor([0.0, 0, 0, 0, -50, -50]))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    kept = Kept(model[1])
    gen = torch.Generator().manual_seed(2)
    with Probe(model, opt) as probe:
        for step in range(6):
            kept.step = step
            opt.zero_grad()
            for sign in ((1.0, -1.0) if step % 2 == 0 else (1.0,)):  # odd steps: one micro-batch of x > 0
                model(sign * torch.rand(8, 2, generator=gen) + sign * 0.1).sum().backward()
            opt.step()
    masks = {s: relu_dead(c) for s, c in kept.calls.items()}
    per_call = [[(out <= 0).all(0) for _, out in kept.calls[s]] for s in sorted(kept.calls)]
    assert not per_call[0][0][:2].any() and per_call[0][1][:2].all()  # dead in one call only: not dead
    ref = reference(masks)
    _compare(probe.units(), "1", ref, 6)
    assert ref["last_fired"].tolist() == [5, 5, 4, 4, -1, -1] and ref["dead_since"].tolist() == [-1, -1, 5, 5, 0, 0]


def test_conv_units_are_channels() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 2))
    with torch.no_grad():
        model[0].bias[[1, 4]] = -100.0  # channels 1 and 4 never fire
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    kept = Kept(model[1])
    gen = torch.Generator().manual_seed(4)
    with Probe(model, opt, every=2) as probe:
        for step in range(6):
            kept.step = step
            opt.zero_grad()
            model(torch.randn(5, 1, 8, 8, generator=gen)).square().mean().backward()
            opt.step()
    masks = {s: (np.concatenate([o for _, o in c]).transpose(1, 0, 2, 3).reshape(8, -1) <= 0).all(1)
             for s, c in kept.calls.items() if s % 2 == 0}
    ref = reference(masks)
    _compare(probe.units(), "1", ref, 3)
    assert ref.loc[[1, 4], "last_fired"].tolist() == [-1, -1]


def test_sigmoid_saturated_fraction_matches_derivative_threshold() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 12), nn.Sigmoid(), nn.Linear(12, 1))
    with torch.no_grad():
        model[0].weight.mul_(torch.linspace(0.5, 30, 12)[:, None])  # later units saturate more often
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tol = ProbeOptions().saturation_tol
    kept = Kept(model[1])
    gen = torch.Generator().manual_seed(6)
    with Probe(model, opt, every=EVERY) as probe:
        for step in range(30):
            kept.step = step
            opt.zero_grad()
            x = torch.randn(4, 3, generator=gen) + torch.randn(1, 3, generator=gen) * 3
            (model(x) - 1).square().mean().backward()
            opt.step()
    recorded = [c for s, c in kept.calls.items() if s % EVERY == 0]
    # sigmoid'(z) = s (1 - s) <= tol (1 - tol)  <=>  s <= tol or s >= 1 - tol: saturated in every example
    slopes = [1 / (1 + np.exp(-z)) * (1 - 1 / (1 + np.exp(-z))) for ((z, _),) in recorded]
    threshold = tol * (1 - tol)
    assert min(np.abs(d - threshold).min() for d in slopes) > 1e-6  # no entry on the float32 rounding edge
    expected = np.mean([(d <= threshold).all(0) for d in slopes], axis=0)
    assert expected.max() > 0 and expected.min() < 1  # the data has both saturated and unsaturated units
    frame = probe.units().sort_values("unit")
    np.testing.assert_allclose(frame["saturated_frac"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert frame["last_fired"].isna().all() and set(frame["observed_steps"]) == {len(recorded)}


def test_units_off_and_bad_unit_dim() -> None:
    model = _mlp()
    with Probe(model, options=ProbeOptions(units=False)) as probe:
        model(torch.randn(4, 6)).sum().backward()
        probe.step()
    assert probe.units().empty and list(probe.units().columns)[:2] == ["layer", "unit"]
    with pytest.raises(GradprobeError, match="unit_dim: 0"):
        Probe(_mlp(), options=ProbeOptions(unit_dim=0))


def _trained_units(width: int, steps: int = 8) -> pd.DataFrame:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))
    with torch.no_grad():
        model[0].bias[: width // 3] = -1e3  # a third of the units dead from the start
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Probe(model, opt) as probe:
        for step in range(steps):
            if step == steps // 2:
                with torch.no_grad():
                    model[0].bias[width // 3: width // 2] = -1e3  # more die half-way
            opt.zero_grad()
            model(torch.randn(16, 4)).square().mean().backward()
            opt.step()
    return probe.units()


def test_store_round_trip_latest_snapshot_and_sql(tmp_path: Path) -> None:
    early, final = _trained_units(12, steps=4), _trained_units(12)
    with RunWriter(tmp_path, "r1", config={}, env={}, meta={}) as writer:
        writer.add_units(early)
        writer.flush()  # a checkpoint's snapshot
        writer.add_units(early)
        writer.add_units(final)  # replaces the buffered one: one snapshot per part
    run = Run(tmp_path / "runs" / "r1")
    assert len(part_files(run.path, "units")) == 2
    pd.testing.assert_frame_equal(run.units(), final.astype({"layer": object}), check_dtype=False)
    raw = pq.read_table(part_files(run.path, "units")[-1]).to_pandas()  # pyarrow, not our reader
    assert raw["last_fired"].tolist() == final["last_fired"].astype("int64").tolist()
    got = query("SELECT unit, dead_since FROM units WHERE run_id = 'r1' AND dead_since >= 0 ORDER BY unit", tmp_path)
    dead = final[final["dead_since"] >= 0]
    assert got["unit"].tolist() == dead["unit"].tolist() and got["dead_since"].tolist() == dead["dead_since"].tolist()
    assert query("SELECT count(*) AS n FROM units", tmp_path)["n"].item() == 12


def test_raster_is_exact_on_recorded_steps() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kept = Kept(model[1])
    gen = torch.Generator().manual_seed(8)
    with Probe(model, opt, every=2) as probe:
        for step in range(20):
            kept.step = step
            with torch.no_grad():
                if step in (3, 9):
                    model[0].bias[[step % 16, 1]] = -1e4
                if step == 12:
                    model[0].bias[1] = 5.0
            opt.zero_grad()
            model(torch.randn(8, 6, generator=gen)).sum().backward()
            opt.step()
    edges, states = unit_states(probe.units().query("layer == '1'"))
    for step, calls in kept.calls.items():
        if step % 2:
            continue
        col = np.searchsorted(edges, step, side="right") - 1
        dead = relu_dead(calls)
        assert dead[states[:, col] == 2].all() and not dead[states[:, col] == 0].any()
    assert (states == 1).any() and (states == 2).any()  # unit 1 died and came back; unit 3 stayed dead


@pytest.mark.parametrize("width", [24, RASTER_MAX_UNITS + 44])
def test_figure_small_and_large_layer(width: int, tmp_path: Path) -> None:
    units = _trained_units(width)
    fig = unit_death(units, "test")
    ax = fig.axes[0]
    assert ax.get_xlabel() == ("optimizer step" if width <= RASTER_MAX_UNITS else "dead since step")
    dead = int((units["dead_since"] >= 0).sum())
    assert ax.get_title().startswith(f"1: {dead} of {width} units dead") and dead >= width // 2
    path = save_figure(fig, tmp_path / "12-unit-death.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_resumed_probe_continues_from_the_stored_snapshot(tmp_path: Path) -> None:
    """A probe stopped at step 12 and one resumed from its stored snapshot give what one probe throughout gives."""
    model = _mlp()
    model[3] = nn.Sigmoid()  # a saturating layer too
    with torch.no_grad():
        model[2].weight.mul_(torch.linspace(0.5, 40, 16)[:, None])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(9)
    whole = Probe(model, opt, every=EVERY, alerts=False)
    part = Probe(model, opt, every=EVERY, alerts=False)
    for step in range(27):
        if step == 12:
            part.detach()
            with RunWriter(tmp_path, "r", config={}, env={}, meta={}) as writer:
                writer.add_units(part.units())
            part = Probe(model, opt, every=EVERY, alerts=False)
            part.resume_at(12)
            part.resume_units(Run(tmp_path / "runs" / "r").units())
        with torch.no_grad():
            if step in (2, 8, 14):
                model[0].bias[[step % 16, 1]] = -1e4
            if step == 17:
                model[0].bias[1] = 5.0
        opt.zero_grad()
        model(torch.randn(8, 6, generator=gen)).sum().backward()
        opt.step()
    whole.detach()
    part.detach()
    expected = whole.units()
    assert (expected["dead_since"] >= 0).sum() >= 3 and (expected["first_dead"] >= 0).sum() >= 4
    sat = expected.loc[expected["layer"] == "3", "saturated_frac"]
    assert 0 < sat.max() and sat.min() < 1 and not sat.isin([0.0, 1.0]).all()
    pd.testing.assert_frame_equal(part.units(), expected)

"""Probe on a torch.compile'd model (inductor, CPU): the same records as eager, no graph break, two graphs in all.

The eager probe is the reference (itself tested against ``p.grad`` and NumPy backprop elsewhere); here the
compiled model is trained on the same data from the same weights and every record must match.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from gradprobe import records as R
from gradprobe.probe import Probe

STEPS, EVERY = 8, 3  # records steps 0, 3, 6: recording and non-recording steps alternate
KEY = ["step", "layer", "tensor", "kind", "stat"]
# torch's own deprecations raised inside its compiler (inductor imports torch.jit; dynamo instantiates
# torch.autograd.Function while tracing one, the probe's DeltaTap), not the probe's
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def train(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> pd.DataFrame:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    with Probe(model, opt, every=EVERY) as probe:
        for _ in range(STEPS):
            x = torch.randn(32, 8, generator=g)
            opt.zero_grad()
            forward(x).square().mean().backward()
            opt.step()
    return probe.frame()


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def assert_same_records(eager: pd.DataFrame, compiled: pd.DataFrame) -> None:
    merged = eager.merge(compiled, on=KEY, how="outer", suffixes=("_eager", "_compiled"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    assert set(merged.kind) == {R.GRAD, R.WEIGHT, R.ACTIVATION, R.DELTA}
    assert set(merged.step) == {0, 3, 6}
    assert {R.UPDATE_RATIO, R.DEAD_FRAC, R.SATURATED_FRAC} <= set(merged.stat)
    assert set(merged.loc[merged.kind == R.DELTA, "layer"]) == {"0", "1", "2", "3", "4"}
    pd.testing.assert_series_equal(merged.value_compiled, merged.value_eager, check_names=False, rtol=1e-4, atol=1e-7)


def test_compiled_module_fullgraph_records_as_eager_in_two_graphs() -> None:
    reference = make()
    eager = train(reference, reference)
    model = make()
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break would raise
    records = train(model, compiled)
    assert not counters["graph_break"]
    # one graph recording, one not: no recompile per step (8 steps alternate between them)
    assert counters["stats"]["unique_graphs"] == 2
    assert_same_records(eager, records)


def test_model_compile_method_records_as_eager() -> None:
    reference = make()
    eager = train(reference, reference)
    model = make()
    model.compile()
    records = train(model, model)
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 2
    assert_same_records(eager, records)

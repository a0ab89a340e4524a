"""The probe attaches to common layer types and non-Sequential models without changing them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.probe import Probe


class Branchy(nn.Module):
    """Not a Sequential: two branches, a residual add, and a functional activation."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(8, 8)
        self.right = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.left(x)) + self.right(x) + x)


class SeqModel(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.rnn = rnn
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.embed(tokens))
        h, _ = self.rnn(h)
        h, _ = self.attn(h, h, h)
        return self.head(h.mean(1))


CASES = {
    "conv2d+bn": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                        nn.Linear(4 * 6 * 6, 2)), lambda: torch.randn(5, 1, 8, 8)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6, 2)),
               lambda: torch.randn(5, 2, 8)),
    "lstm": (lambda: SeqModel(nn.LSTM(8, 8, batch_first=True)), lambda: torch.randint(0, 20, (4, 6))),
    "gru": (lambda: SeqModel(nn.GRU(8, 8, batch_first=True)), lambda: torch.randint(0, 20, (4, 6))),
    "rnn": (lambda: SeqModel(nn.RNN(8, 8, batch_first=True)), lambda: torch.randint(0, 20, (4, 6))),
    "branchy": (Branchy, lambda: torch.randn(6, 8)),
    "transformer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
                    lambda: torch.randn(3, 5, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_parameter_gets_grad_stats_and_output_is_unchanged(case):
    make_model, make_input = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    x = make_input()
    torch.manual_seed(1)
    ref_model = make_model()
    ref_model.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    ref_opt = torch.optim.Adam(ref_model.parameters(), 1e-3)
    with Probe(model, opt, hist_every=1) as probe:
        for m, o in ((model, opt), (ref_model, ref_opt)):
            o.zero_grad()
            m(x).float().pow(2).mean().backward()
            o.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)  # training is bit-identical with the probe attached
    frame = probe.frame()
    grads = frame[(frame.kind == R.GRAD) & (frame.stat == R.NORM)]
    names = {f"{layer}.{tensor}".lstrip(".") for layer, tensor in zip(grads.layer, grads.tensor)}
    assert names == {n for n, p in model.named_parameters() if p.grad is not None}
    assert (frame[frame.kind == R.ACTIVATION].stat == R.MEAN).sum() >= 2
    assert (frame[frame.kind == R.DELTA].stat == R.NORM).sum() >= 2
    assert len(probe.hists()) == 2 * len(grads)

"""GradprobeCallback: records equal a hand-written loop's p.grad (before clipping) and weight copies."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from gradprobe import records as R  # noqa: E402
from gradprobe.errors import GradprobeError  # noqa: E402
from gradprobe.integrations.lightning import GradprobeCallback  # noqa: E402
from gradprobe.store.reader import load_run  # noqa: E402

# lightning 2.6 calls torch's deprecated isinstance(treespec, LeafSpec) in its own _pytree module
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACCUM, CLIP = 2, 0.05


def mlp(act: type[nn.Module], depth: int, width: int, init: str, seed: int = 0) -> nn.Sequential:
    """``Linear(8, width), act, ..., Linear(width, 1)`` with N(0, 1) (``"normal"``) or He (``"he"``) weights."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(8 if i == 0 else width, width), act()]
    net = nn.Sequential(*layers, nn.Linear(width, 1))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight) if init == "normal" else nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


class Classifier(pl.LightningModule):
    """A binary classifier around ``net``, trained with SGD and momentum."""

    def __init__(self, net: nn.Module, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.hparams.lr, momentum=0.9)


def loader(n: int = 128, batch: int = 8) -> DataLoader:
    """A fixed task (XOR-like), in a fixed order."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(1))
    y = ((x[:, 0] * x[:, 1] + x[:, 2]) > 0).float().unsqueeze(1)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def trainer(callbacks: list[pl.Callback], logger: object = False, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
                      callbacks=callbacks, **{"max_epochs": 1, **kwargs})


def hand_loop(net: nn.Module, lr: float, clip: float = CLIP, bf16: bool = False) -> dict[str, list]:
    """The same training by hand: per step, grad norm and mean |g| before clipping, the true update ratio."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    seen: dict[str, list] = {"norm": [], "mean_abs": [], "ratio": [], "total": [], "loss": []}
    losses = []
    for i, (x, y) in enumerate(loader()):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = F.binary_cross_entropy_with_logits(net(x), y)
        (loss / ACCUM).backward()
        losses.append(loss.item())
        if (i + 1) % ACCUM:
            continue
        named = list(net.named_parameters())
        seen["norm"].append({f"net.{n}": p.grad.norm().item() for n, p in named})
        seen["mean_abs"].append({f"net.{n}": p.grad.abs().mean().item() for n, p in named})
        seen["total"].append(nn.utils.clip_grad_norm_(net.parameters(), clip).item())
        before = {n: p.detach().clone() for n, p in named}
        opt.step()
        opt.zero_grad()
        seen["ratio"].append({f"net.{n}": ((p - before[n]).norm() / before[n].norm()).item() for n, p in named})
        seen["loss"].append(sum(losses) / len(losses))
        losses = []
    return seen


def stat(frame: pd.DataFrame, kind: str, name: str) -> pd.DataFrame:
    """One stat of one kind as a step x parameter table."""
    sel = frame[(frame["kind"] == kind) & (frame["stat"] == name)]
    return sel.assign(param=sel["layer"] + "." + sel["tensor"]).pivot(index="step", columns="param", values="value")


def test_records_equal_a_hand_written_loop_with_accumulation_and_clipping(tmp_path):
    cb = GradprobeCallback(every=1, store=tmp_path / "store")
    csv = CSVLogger(tmp_path / "logs", name="fit")
    trainer([cb], csv, accumulate_grad_batches=ACCUM, gradient_clip_val=CLIP).fit(
        Classifier(mlp(nn.Tanh, 2, 16, "he"), lr=0.1), loader())
    oracle = hand_loop(mlp(nn.Tanh, 2, 16, "he"), lr=0.1)
    assert sum(t > CLIP for t in oracle["total"]) >= 6  # clipping really changed most steps' gradients
    run = load_run(cb.run_id, tmp_path / "store")
    frame = run.frame()
    for kind, name, key in ((R.GRAD, R.NORM, "norm"), (R.GRAD, R.MEAN_ABS, "mean_abs"),
                            (R.WEIGHT, R.UPDATE_RATIO, "ratio")):
        expected = pd.DataFrame(oracle[key])
        got = stat(frame, kind, name)
        assert list(got.index) == list(range(8))
        pd.testing.assert_frame_equal(got[expected.columns].reset_index(drop=True), expected,
                                      check_names=False, rtol=1e-5, atol=0)
    metrics = run.metrics()
    assert metrics["step"].tolist() == list(range(8))
    assert metrics["value"].tolist() == pytest.approx(oracle["loss"], rel=1e-5)
    trainer_cfg = run.config["trainer"]
    assert (trainer_cfg["accumulate_grad_batches"], trainer_cfg["gradient_clip_val"]) == (ACCUM, CLIP)
    assert run.config["hparams"] == {"lr": 0.1} and run.status == R.FINISHED
    # the trainer's own logger got the same numbers at the same steps (read back from its metrics.csv)
    logged = pd.read_csv(Path(csv.log_dir) / "metrics.csv")
    column = logged.dropna(subset=["gradprobe/grad/norm/net.0.weight"])
    assert column["step"].tolist() == list(range(8))
    assert column["gradprobe/grad/norm/net.0.weight"].tolist() == pytest.approx(
        [s["net.0.weight"] for s in oracle["norm"]], rel=1e-5)
    assert cb.diagnosis is not None and cb.diagnosis.verdict in {"healthy", "vanishing", "exploding",
                                                                  "dead", "saturated", "stalled", "unstable"}


def test_bf16_mixed_records_finite_stats_equal_to_an_autocast_loop(tmp_path):
    cb = GradprobeCallback(every=1, store=tmp_path)
    trainer([cb], precision="bf16-mixed", accumulate_grad_batches=ACCUM).fit(
        Classifier(mlp(nn.Tanh, 2, 16, "he"), lr=0.1), loader())
    frame = load_run(cb.run_id, tmp_path).frame()
    from_zero = (frame["stat"] == R.UPDATE_RATIO) & (frame["tensor"] == "bias") & (frame["step"] == 0)
    assert from_zero.sum() == 3 and (frame.loc[from_zero, "value"] == float("inf")).all()  # biases start at 0
    assert (frame.loc[~from_zero, "value"].abs() < float("inf")).all()  # and no NaN
    assert set(frame["kind"]) == {R.GRAD, R.WEIGHT, R.ACTIVATION, R.DELTA}
    oracle = hand_loop(mlp(nn.Tanh, 2, 16, "he"), lr=0.1, clip=float("inf"), bf16=True)
    for kind, name, key in ((R.GRAD, R.NORM, "norm"), (R.WEIGHT, R.UPDATE_RATIO, "ratio")):
        expected = pd.DataFrame(oracle[key])
        got = stat(frame, kind, name)[expected.columns].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_names=False, rtol=1e-4, atol=0)


@pytest.mark.parametrize("act, init, lr, verdict", [(nn.Sigmoid, "normal", 0.5, "vanishing"),
                                                    (nn.ReLU, "he", 0.01, "healthy")])
def test_diagnosis_through_lightning(act, init, lr, verdict):
    cb = GradprobeCallback(every=1, store=False)
    model = Classifier(mlp(act, 6 if verdict == "vanishing" else 3, 16, init), lr=lr)
    trainer([cb], max_epochs=5).fit(model, loader(256, 32))
    assert cb.diagnosis.verdict == verdict
    assert cb.diagnosis.layer("net.0.weight").verdict == verdict


class GAN(pl.LightningModule):
    """Two optimizers under manual optimization; records p.grad and weight copies around each step itself."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.gen = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
        self.disc = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.seen: dict[str, list[dict[str, float]]] = {"gen": [], "disc": [], "gen_ratio": [], "disc_ratio": []}

    def _step(self, name: str, opt: object, loss: torch.Tensor) -> None:
        part = getattr(self, name)
        opt.zero_grad()
        self.manual_backward(loss)
        self.seen[name].append({f"{name}.{n}": p.grad.norm().item() for n, p in part.named_parameters()})
        before = {n: p.detach().clone() for n, p in part.named_parameters()}
        opt.step()
        self.seen[f"{name}_ratio"].append({f"{name}.{n}": ((p - before[n]).norm() / before[n].norm()).item()
                                           for n, p in part.named_parameters()})

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real = batch[0]
        opt_g, opt_d = self.optimizers()
        fake = self.gen(torch.randn(len(real), 4))
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        d_loss = (F.binary_cross_entropy_with_logits(self.disc(real), ones)
                  + F.binary_cross_entropy_with_logits(self.disc(fake.detach()), zeros))
        self._step("disc", opt_d, d_loss)
        self._step("gen", opt_g, F.binary_cross_entropy_with_logits(self.disc(fake), ones))  # also fills disc grads

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.gen.parameters(), lr=1e-3), torch.optim.Adam(self.disc.parameters(), lr=1e-3)]


def test_gan_with_two_optimizers_one_callback_each(tmp_path):
    gen, disc = GradprobeCallback(every=1, store=tmp_path, optimizer=0), GradprobeCallback(every=1, store=tmp_path,
                                                                                          optimizer=1)
    csv = CSVLogger(tmp_path / "logs", name="gan")
    model = GAN()
    trainer([gen, disc], csv).fit(model, loader(64, 8))
    logged = pd.read_csv(Path(csv.log_dir) / "metrics.csv")
    for cb, name, first_global in ((gen, "gen", 1), (disc, "disc", 0)):
        frame = load_run(cb.run_id, tmp_path).frame()
        assert set(frame["layer"]) == {f"{name}.0", f"{name}.1", f"{name}.2"}  # its parameters and modules only
        for key, kind, st in ((name, R.GRAD, R.NORM), (f"{name}_ratio", R.WEIGHT, R.UPDATE_RATIO)):
            expected = pd.DataFrame(model.seen[key])
            got = stat(frame, kind, st)[expected.columns].reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, check_names=False, rtol=1e-5, atol=0)
        # each optimizer step is a global step: the discriminator logs at 0, 2, 4, ..., the generator at 1, 3, ...
        steps = logged.dropna(subset=[f"gradprobe/grad/norm/{name}.0.weight"])["step"].tolist()
        assert steps == list(range(first_global, 16, 2))


def test_bad_optimizer_index_names_the_count():
    with pytest.raises(GradprobeError, match="optimizer: 1 is out of range; configure_optimizers returned 1"):
        trainer([GradprobeCallback(store=False, optimizer=1)]).fit(Classifier(mlp(nn.ReLU, 1, 4, "he"), 0.1), loader())


def test_import_without_lightning_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "gradprobe.integrations.lightning")
    with pytest.raises(GradprobeError, match=r"^lightning is not installed; .*pip install 'gradprobe\[lightning\]'$"):
        importlib.import_module("gradprobe.integrations.lightning")


def test_example_runs(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "lightning_callback.py")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "GRADPROBE_STORE": str(tmp_path)},
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "gradprobe diagnosis: vanishing" in res.stderr
    assert list(tmp_path.glob("reports/*/report.html"))

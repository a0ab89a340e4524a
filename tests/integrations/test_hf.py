"""GradprobeTrainerCallback: records equal p.grad captured before the optimizer step and a hand-written loop."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from gradprobe import records as R  # noqa: E402
from gradprobe.errors import GradprobeError  # noqa: E402
from gradprobe.integrations.hf import GradprobeTrainerCallback  # noqa: E402
from gradprobe.store.reader import load_run  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACCUM, CLIP, LR, STEPS, SEQ = 2, 1.0, 0.5, 6, 12


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class Sentences(torch.utils.data.Dataset):
    """``n`` synthetic token sequences; the label is whether the first token is in the upper half of the vocab."""

    def __init__(self, n: int = 24) -> None:
        self.ids = torch.randint(5, 100, (n, SEQ), generator=torch.Generator().manual_seed(1))
        self.labels = (self.ids[:, 0] >= 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": self.labels[i]}


def tiny_bert(**config: Any) -> BertForSequenceClassification:
    """A 2-layer BERT (hidden 32, 2 heads) randomly initialised from seed 0; ``config`` overrides BertConfig."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**{"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
                                                        "num_attention_heads": 2, "intermediate_size": 64,
                                                        "max_position_embeddings": SEQ, **config}))
    # BERT's forward takes **kwargs, so the Trainer would pass num_items_in_batch and skip dividing the loss by
    # the accumulation steps, yet BERT's loss ignores it (micro-batch gradients summed): ask for the mean instead
    model.accepts_loss_kwargs = False
    return model


def arguments(tmp_path: Path, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(**{"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4,
                                "gradient_accumulation_steps": ACCUM, "max_grad_norm": CLIP, "max_steps": STEPS,
                                "logging_steps": 1, "report_to": [], "use_cpu": True, "save_strategy": "no",
                                "seed": 0, "dataloader_num_workers": 0, "disable_tqdm": True, "optim": "sgd",
                                "learning_rate": LR, "lr_scheduler_type": "constant", "weight_decay": 0.0,
                                **kwargs})


class Witness(TrainerCallback):
    """The test's own capture: batches fed to the model, and p.grad in a torch step pre-hook on the optimizer."""

    def __init__(self, model: nn.Module) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []
        self.grads: list[dict[str, float]] = []
        model.register_forward_pre_hook(self._batch, with_kwargs=True)
        self.named = list(model.named_parameters())

    def _batch(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        self.batches.append({k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        optimizer.optimizer.register_step_pre_hook(self._grads)  # accelerate's wrapper -> the torch optimizer

    def _grads(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.grads.append({n: p.grad.norm().item() for n, p in self.named})


def exact_bert() -> BertForSequenceClassification:
    """No dropout (no RNG in forward, so a hand loop can replay it); weights N(0, 0.2) so that clipping bites."""
    return tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)


def hand_loop(batches: list[dict[str, torch.Tensor]]) -> dict[str, list]:
    """The same training by hand: mean loss over micro-batches, clip, SGD; stats of p.grad as the optimizer sees it."""
    model = exact_bert()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    seen: dict[str, list] = {"norm": [], "mean_abs": [], "ratio": [], "total": [], "loss": []}
    for start in range(0, len(batches), ACCUM):
        losses = []
        for batch in batches[start:start + ACCUM]:
            loss = model(**batch).loss
            (loss / ACCUM).backward()
            losses.append(loss.item())
        seen["total"].append(nn.utils.clip_grad_norm_(model.parameters(), CLIP).item())
        named = list(model.named_parameters())
        seen["norm"].append({n: p.grad.norm().item() for n, p in named})
        seen["mean_abs"].append({n: p.grad.abs().mean().item() for n, p in named})
        before = {n: p.detach().clone() for n, p in named}
        opt.step()
        opt.zero_grad()
        seen["ratio"].append({n: ((p - before[n]).norm() / before[n].norm()).item() for n, p in named})
        seen["loss"].append(sum(losses) / len(losses))
    return seen


def stat(frame: pd.DataFrame, kind: str, name: str) -> pd.DataFrame:
    """One stat of one kind as a step x parameter table."""
    sel = frame[(frame["kind"] == kind) & (frame["stat"] == name)]
    return sel.assign(param=sel["layer"] + "." + sel["tensor"]).pivot(index="step", columns="param", values="value")


def test_records_equal_a_hand_written_loop_with_accumulation_and_clipping(tmp_path):
    model = exact_bert()
    cb, witness = GradprobeTrainerCallback(every=1, store=tmp_path / "store"), Witness(model)
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=Sentences(), callbacks=[witness, cb])
    trainer.train()
    assert len(witness.batches) == STEPS * ACCUM and len(witness.grads) == STEPS
    oracle = hand_loop(witness.batches)  # the Trainer's data order, replayed by hand
    assert sum(t > CLIP for t in oracle["total"]) >= 3  # clipping really changed half of the steps' gradients
    run = load_run(cb.run_id, tmp_path / "store")
    frame = run.frame()
    pd.testing.assert_frame_equal(stat(frame, R.GRAD, R.NORM)[list(witness.grads[0])].reset_index(drop=True),
                                  pd.DataFrame(witness.grads), check_names=False, rtol=1e-6, atol=0)
    for kind, name, key in ((R.GRAD, R.NORM, "norm"), (R.GRAD, R.MEAN_ABS, "mean_abs"),
                            (R.WEIGHT, R.UPDATE_RATIO, "ratio")):
        expected = pd.DataFrame(oracle[key])
        got = stat(frame, kind, name)
        assert list(got.index) == list(range(STEPS))
        pd.testing.assert_frame_equal(got[expected.columns].reset_index(drop=True), expected,
                                      check_names=False, rtol=1e-4, atol=0)
    metrics = run.metrics()
    loss = metrics[metrics["metric"] == "loss"]
    assert loss["step"].tolist() == list(range(STEPS))
    assert loss["value"].tolist() == pytest.approx(oracle["loss"], rel=1e-5)
    assert run.config["training_args"]["gradient_accumulation_steps"] == ACCUM
    assert run.config["training_args"]["max_grad_norm"] == CLIP
    assert run.config["model_config"]["hidden_size"] == 32 and run.status == R.FINISHED
    # the Trainer's log history holds the same numbers, merged into its own entry of each step (1-based)
    key = "gradprobe/grad/norm/bert.encoder.layer.0.attention.self.query.weight"
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == list(range(1, STEPS + 1))
    assert [e[key] for e in train_logs] == pytest.approx(
        [s["bert.encoder.layer.0.attention.self.query.weight"] for s in oracle["norm"]], rel=1e-4)
    assert cb.diagnosis is not None


class SigmoidMLP(nn.Module):
    """``depth`` sigmoid layers with N(0, 1) weights (vanishing) or ReLU with He weights (healthy), then a head."""

    def __init__(self, act: type[nn.Module], depth: int, init: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(8 if i == 0 else 16, 16), act()]
        self.net = nn.Sequential(*layers, nn.Linear(16, 2))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight) if init == "normal" else nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Points(torch.utils.data.Dataset):
    """An XOR-like task on 8 features."""

    def __init__(self, n: int = 256) -> None:
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(1))
        self.y = ((self.x[:, 0] * self.x[:, 1] + self.x[:, 2]) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.mark.parametrize("act, depth, init, lr, verdict", [(nn.Sigmoid, 6, "normal", 0.5, "vanishing"),
                                                           (nn.ReLU, 3, "he", 0.01, "healthy")])
def test_diagnosis_through_the_trainer(tmp_path, act, depth, init, lr, verdict):
    cb = GradprobeTrainerCallback(every=1, store=False)
    args = arguments(tmp_path, per_device_train_batch_size=32, gradient_accumulation_steps=1, max_steps=-1,
                     num_train_epochs=5, learning_rate=lr, logging_steps=10)
    Trainer(model=SigmoidMLP(act, depth, init), args=args, train_dataset=Points(), callbacks=[cb]).train()
    assert cb.diagnosis.verdict == verdict
    assert cb.diagnosis.layer("net.0.weight").verdict == verdict


# BERT's standard init (N(0, 0.02)) makes the attention logits ~0: dL/dW_q scales with W_k and dL/dW_k with W_q,
# so query/key weights get ~1/110 of their branch's output-projection gradient by construction, not by depth. The
# structure marks them as feeding a product of two activations, and the branch rule leaves them out.
def test_tiny_bert_is_healthy(tmp_path):
    cb = GradprobeTrainerCallback(every=1, store=tmp_path / "store")
    args = arguments(tmp_path, optim="adamw_torch", learning_rate=1e-3, max_steps=12)
    Trainer(model=tiny_bert(), args=args, train_dataset=Sentences(48), callbacks=[cb]).train()
    assert cb.diagnosis.verdict == "healthy", str(cb.diagnosis)
    run = load_run(cb.run_id, tmp_path / "store")
    bilinear = set(run.summary["structure"]["bilinear"])
    attn = "bert.encoder.layer.0.attention.self"
    assert {f"{attn}.query", f"{attn}.key", f"{attn}.value"} <= bilinear
    assert "bert.encoder.layer.0.intermediate.dense" not in bilinear
    # What the old branch rule read as vanishing, measured from the records: query's |g| << the output projection's.
    frame = run.frame()
    g = frame[(frame.kind == "grad") & (frame.stat == "mean_abs") & (frame.tensor == "weight")]
    ratio = (g[g.layer == f"{attn}.query"]["value"].median()
             / g[g.layer == "bert.encoder.layer.0.attention.output.dense"]["value"].median())
    assert ratio < 0.1


def test_import_without_transformers_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "gradprobe.integrations.hf")
    with pytest.raises(GradprobeError, match=r"^transformers is not installed; .*pip install 'gradprobe\[hf\]'$"):
        importlib.import_module("gradprobe.integrations.hf")


def test_example_runs(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "hf_trainer_callback.py")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "GRADPROBE_STORE": str(tmp_path)},
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "gradprobe diagnosis of run hf." in res.stderr and "log-history entries carry" in res.stdout
    assert list(tmp_path.glob("reports/*/report.html"))


def test_statistics_of_steps_the_trainer_does_not_log_go_into_the_history_in_order(tmp_path):
    cb = GradprobeTrainerCallback(every=1, store=False)
    args = arguments(tmp_path, per_device_train_batch_size=32, gradient_accumulation_steps=1, max_steps=7,
                     logging_steps=3)
    trainer = Trainer(model=SigmoidMLP(nn.ReLU, 2, "he"), args=args, train_dataset=Points(), callbacks=[cb])
    trainer.train()
    history = trainer.state.log_history
    steps = [e["step"] for e in history if "gradprobe/grad/norm/net.0.weight" in e]
    assert steps == list(range(1, 8))  # every update, at the step the Trainer numbers it
    assert [e["step"] for e in history] == sorted(e["step"] for e in history)
    assert [e["step"] for e in history if "loss" in e and "gradprobe/grad/norm/net.0.weight" in e] == [3, 6]


def test_the_callback_does_not_change_training_with_dropout(tmp_path):
    losses = []
    for callbacks in ([], [GradprobeTrainerCallback(every=1, store=False)]):
        trainer = Trainer(model=tiny_bert(), args=arguments(tmp_path, max_steps=3), train_dataset=Sentences(48),
                          callbacks=callbacks)
        trainer.train()
        losses.append([e["loss"] for e in trainer.state.log_history if "loss" in e])
    assert losses[0] == losses[1]  # the structure read runs dropout modules without drawing from the run's RNG

"""Probe a Hugging Face ``Trainer`` with one line: a tiny BERT on synthetic sentences, diagnosed and reported.

Run: ``python examples/hf_trainer_callback.py`` (CPU, under a minute, no download). The diagnosis is
logged at the end of ``train()``; the run is stored in ``$GRADPROBE_STORE`` (default
``./gradprobe-runs``) with its ``report.html``; the statistics are also in
``trainer.state.log_history`` under ``gradprobe/<kind>/<stat>/<layer>.<tensor>``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is built from a config: nothing to download

import tempfile  # noqa: E402

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from gradprobe.integrations.hf import GradprobeTrainerCallback  # noqa: E402


class Sentences(torch.utils.data.Dataset):
    """Synthetic token sequences; the label says whether token 7 occurs in the sentence."""

    def __init__(self, n: int = 192, length: int = 16) -> None:
        self.ids = torch.randint(5, 100, (n, length), generator=torch.Generator().manual_seed(0))
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def main() -> None:
    """Train a 2-layer BERT for a few epochs with the callback attached; the callback stores and diagnoses it."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=16))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=16, gradient_accumulation_steps=2,
                                 learning_rate=1e-3, max_grad_norm=1.0, num_train_epochs=2, logging_steps=6,
                                 report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=Sentences(),
                          callbacks=[GradprobeTrainerCallback(every=1, report=True)])  # the one line
        trainer.train()
    logged = [e for e in trainer.state.log_history if "gradprobe/grad/norm/classifier.weight" in e]
    print(f"{len(logged)} log-history entries carry gradprobe statistics, e.g. step {logged[-1]['step']}: "
          f"|grad classifier.weight| = {logged[-1]['gradprobe/grad/norm/classifier.weight']:.3g}")


if __name__ == "__main__":
    main()

"""Overhead of GradprobeTrainerCallback at its default cadence: whole ``Trainer.train()`` wall time, with vs without.

Run: ``python benchmarks/bench_hf.py [--reps 5]``. Interleaves repetitions (without, with, without, ...) on a
tiny BERT (CPU, one thread) and prints the medians and the relative overhead as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from gradprobe.integrations.hf import GradprobeTrainerCallback  # noqa: E402


class Sentences(torch.utils.data.Dataset):
    """Synthetic token sequences with a learnable label (token 7 present)."""

    def __init__(self, n: int, length: int = 32) -> None:
        self.ids = torch.randint(5, 1000, (n, length), generator=torch.Generator().manual_seed(0))
        self.labels = (self.ids < 100).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def fit(probe: bool, steps: int, out: str) -> float:
    """Wall time of one train() of a 4-layer BERT (hidden 128), with or without the callback."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4,
                                                     num_attention_heads=4, intermediate_size=512,
                                                     max_position_embeddings=32))
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=16, gradient_accumulation_steps=2,
                             max_steps=steps, logging_steps=50, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0, dataloader_num_workers=0)
    callbacks = [GradprobeTrainerCallback(store=out)] if probe else []
    trainer = Trainer(model=model, args=args, train_dataset=Sentences(steps * 32), callbacks=callbacks)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    """Interleave with/without fits and print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    ns = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as out:
        fit(False, 5, out)  # warm-up: imports, allocator
        for _ in range(ns.reps):
            for name in ("without", "with"):
                times[name].append(fit(name == "with", ns.steps, out))
    base, probed = statistics.median(times["without"]), statistics.median(times["with"])
    print(json.dumps({"steps": ns.steps, "reps": ns.reps, "median_without_s": round(base, 3),
                      "median_with_s": round(probed, 3), "overhead": round(probed / base - 1, 4),
                      "times": {k: [round(t, 3) for t in v] for k, v in times.items()}}))


if __name__ == "__main__":
    main()

"""Send gradprobe's statistics to MLflow and W&B from your own training loop, both offline on disk.

Run: python examples/tracker_sinks.py [OUT_DIR]   (needs pip install 'gradprobe[mlflow,wandb]')
Then: mlflow ui --backend-store-uri OUT_DIR/mlruns, or wandb sync OUT_DIR/wandb/offline-run-*.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import gradprobe
from gradprobe.sinks import MLflowSink, WandbSink, feed


def main(out: Path) -> None:
    os.environ.setdefault("WANDB_MODE", "offline")  # no account, no network: the run stays in out/wandb
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps a plain folder store opt-in
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(512, 2)
    y = (x.norm(dim=1, keepdim=True) > 1).float()
    sinks = [MLflowSink(str(out / "mlruns"), "tracker-sinks", "tanh-mlp"),
             WandbSink("tracker-sinks", name="tanh-mlp", dir=str(out))]
    with gradprobe.Probe(model, opt, every=5, hist_every=25, sink=feed(*sinks)) as probe:  # exit flushes
        for _ in range(100):
            idx = torch.randint(0, 512, (64,))
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx]).backward()
            opt.step()
    for sink in sinks:
        sink.finish("finished", {"steps": probe.step_count})
    print(f"MLflow run {sinks[0].run_id} in {out / 'mlruns'}")
    print(f"W&B offline run {sinks[1].run.id} in {out / 'wandb'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="gradprobe-sinks-")))

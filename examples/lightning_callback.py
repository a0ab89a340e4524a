"""gradprobe in a PyTorch Lightning fit: one callback records, stores, diagnoses and writes the report.

A deep sigmoid MLP with N(0, 1) weights on two circles: the diagnosis (logged at the end of the fit)
says ``vanishing``; the statistics also appear in the trainer's CSV logger as ``gradprobe/...`` columns.
Run: ``python examples/lightning_callback.py`` (runs go to ``$GRADPROBE_STORE`` or ``./gradprobe-runs``).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import make_circles
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradprobe.integrations.lightning import GradprobeCallback


class Circles(pl.LightningModule):
    """Two circles, classified by ``depth`` sigmoid layers with N(0, 1) weights (a textbook vanishing case)."""

    def __init__(self, depth: int = 6, width: int = 16, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(2 if i == 0 else width, width), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    """Fit for a few epochs with the callback; print where the run, the report and the logged stats are."""
    torch.manual_seed(0)
    x, y = make_circles(n_samples=512, factor=0.5, noise=0.1, random_state=0)
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None])
    probe = GradprobeCallback(every=1, report=True)  # the one line gradprobe adds
    logger = CSVLogger("lightning_logs", name="circles")
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=logger, callbacks=[probe],
                         gradient_clip_val=1.0, log_every_n_steps=1, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Circles(), DataLoader(data, batch_size=32, shuffle=True))
    print(f"run {probe.run_id}: {probe.diagnosis.verdict}; stats also in {logger.log_dir}/metrics.csv")


if __name__ == "__main__":
    main()

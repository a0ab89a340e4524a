"""Sinks: where a run's records go as they are made (run store, TensorBoard, MLflow, W&B), one interface.

Each tracker sink imports its library in its constructor, so importing this package needs none of them.
"""

from gradprobe.report.tensorboard import TensorBoardSink
from gradprobe.sinks.base import RunSink, feed
from gradprobe.sinks.mlflow import MLflowSink
from gradprobe.sinks.wandb import WandbSink

__all__ = ["MLflowSink", "RunSink", "TensorBoardSink", "WandbSink", "feed"]

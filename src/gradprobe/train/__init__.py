"""Configs, the training loop and experiment loading."""

from gradprobe.train.config import ExperimentConfig, RunConfig
from gradprobe.train.experiment import Experiment, load_experiment, preset_names
from gradprobe.train.loop import RunResult, Trainer

__all__ = ["Experiment", "ExperimentConfig", "RunConfig", "RunResult", "Trainer", "load_experiment",
           "preset_names"]

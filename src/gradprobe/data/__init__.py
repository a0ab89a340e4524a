"""Data sets: toy 2-D sets, digits and (Fashion-)MNIST, loaded from a ``DataConfig``."""

from gradprobe.data.config import DATA_NAMES, DataConfig
from gradprobe.data.datasets import Dataset, load_dataset, resolve_data_dir
from gradprobe.data.download import download
from gradprobe.data.idx import FASHION_MNIST_FILES, MNIST_FILES, file_md5, load_mnist, read_idx
from gradprobe.data.synthetic import make_circles, make_moons, make_spiral, make_xor

__all__ = [
    "DATA_NAMES",
    "FASHION_MNIST_FILES",
    "MNIST_FILES",
    "DataConfig",
    "Dataset",
    "download",
    "file_md5",
    "load_dataset",
    "load_mnist",
    "make_circles",
    "make_moons",
    "make_spiral",
    "make_xor",
    "read_idx",
    "resolve_data_dir",
]

"""Shared test settings: one torch thread (tiny nets, shared CI cores) and a private run store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
_SIBLING_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("GRADPROBE_TEST_DATA", _SIBLING_DATA))


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own GRADPROBE_STORE so nothing lands in the working tree."""
    store = tmp_path / "store"
    monkeypatch.setenv("GRADPROBE_STORE", str(store))
    return store


@pytest.fixture
def shared_data() -> Path:
    """The real MNIST / Fashion-MNIST IDX files (../shared/data), skipped only if absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real MNIST files not found in {SHARED_DATA}")
    return SHARED_DATA

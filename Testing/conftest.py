"""Shared fixtures: the real data beside the checkout (../shared/data), skipped with a reason if absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Test tensors are small: one thread is as fast, and it does not collapse when other jobs share the cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "Resources" / "Samples"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real data sets in {SHARED_DATA} (the ../shared folder beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES

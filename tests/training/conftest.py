"""Shared fixtures: the shipped specs, one CPU thread (deterministic, fast on small convs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from .imagefolders import use_fake_torchvision

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def specs() -> Path:
    return SPECS


@pytest.fixture
def fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import torchvision`` gets the test double of ``imagefolders.FAKE`` in this test."""
    yield from use_fake_torchvision(monkeypatch)

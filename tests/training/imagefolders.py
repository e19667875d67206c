"""Image folders for tests: small PNG files written with Pillow, and the torchvision test
double (``fake_torchvision/``) that reads them where torchvision is not installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

#: The folder holding the test double's ``torchvision`` package: first on ``sys.path`` or
#: ``PYTHONPATH``, it is what ``import torchvision`` finds.
FAKE = Path(__file__).resolve().parent / "fake_torchvision"


def use_fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In this process, for one test: the double first on ``sys.path``, and no ``torchvision``
    module cached before or after (a real one, or the double once the test is over)."""

    def cached() -> list[str]:
        return [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]

    for name in cached():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE))
    yield
    for name in cached():
        del sys.modules[name]


def png(path: Path, size: tuple[int, int] = (13, 9), mode: str = "RGB", seed: int = 0) -> Path:
    """A PNG of random pixels, ``size`` = (width, height), in mode ``RGB`` or ``L``."""
    width, height = size
    bands = 3 if mode == "RGB" else 1
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, bands), generator=g, dtype=torch.uint8)
    array = pixels.numpy() if bands == 3 else pixels[..., 0].numpy()
    image = Image.fromarray(array)
    assert image.mode == mode
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def class_folders(
    root: Path,
    counts: dict[str, int],
    size: tuple[int, int] = (13, 9),
    mode: str = "RGB",
) -> Path:
    """``root/<class>/<i>.png``, ``counts[class]`` images per class (0: an empty folder)."""
    seed = 0
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            png(root / name / f"{i:02d}.png", size, mode, seed)
    return root

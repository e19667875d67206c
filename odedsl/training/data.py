"""Data sets for ``odedsl train``: small, offline, deterministic.

* ``digits``: scikit-learn's 8×8 handwritten digits (1797 images, 1 channel, 10 classes), the
  ``data`` extra; a fixed stratified 80/20 split so every run tests on the same 359 images.
* ``synthetic``: class-dependent oriented gratings plus noise, learnable but not trivial; the
  fallback when scikit-learn is missing, and a data set of any size/channels for tests.
* a directory: ``torchvision.datasets.ImageFolder`` (``train/`` and ``test/`` or ``val/``
  subfolders when present, else a fixed 80/20 split), when torchvision is importable.

Everything in memory is standardised with the training set's per-channel mean and std.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from odedsl.diagnostics import Diagnostic, DslError, by_face, option

NAMES = ("digits", "synthetic")
SPLIT_SEED = 0  # the train/test split never depends on the training seed


@dataclass
class DataBundle:
    """A train and a test set with what the network's input must match."""

    name: str
    train: Dataset[tuple[Tensor, int]]
    test: Dataset[tuple[Tensor, int]]
    channels: int
    size: int
    classes: int
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


class TensorPairs(Dataset[tuple[Tensor, int]]):
    """Images and labels held as two tensors; batches are gathered by indexing, not looping."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def bad_data(message: str, hint: str) -> DslError:
    return DslError([Diagnostic("E110", message, None, hint)])


def load_data(
    source: str | Path, *, channels: int | None = None, size: int | None = None
) -> DataBundle:
    """``digits``, ``synthetic`` or an image directory. ``channels``/``size`` shape the
    synthetic set and resize a directory's images; ``digits`` is always 1×8×8."""
    text = str(source)
    if text == "digits":
        try:
            return digits()
        except ImportError:
            print(
                "odedsl: scikit-learn is not installed (pip install 'odedsl[data]'); "
                "training on the synthetic data set instead",
                file=sys.stderr,
            )
            bundle = synthetic(channels=channels or 1, size=size or 8)
            bundle.notes.append("scikit-learn missing: synthetic data instead of digits")
            return bundle
    if text == "synthetic":
        return synthetic(channels=channels or 1, size=size or 8)
    path = Path(text)
    if path.is_dir():
        return image_folder(path, size=size)
    raise bad_data(
        f"{option('data', text, as_given=True)}: neither a data set name nor a directory",
        "expected one of: " + ", ".join(NAMES) + ", or a folder of class subfolders",
    )


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _stratified_split(labels: Tensor, test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """Per class, a fixed permutation; its first ``test_fraction`` goes to the test set."""
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = round(len(idx) * test_fraction)
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return torch.sort(torch.cat(train_idx)).values, torch.sort(torch.cat(test_idx)).values


def digits() -> DataBundle:
    """The 8×8 digits, scaled to [0, 1], standardised; 1438 train / 359 test images."""
    from sklearn.datasets import load_digits  # the `data` extra

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(raw.target, dtype=torch.int64)
    tr, te = _stratified_split(labels)
    x_tr, x_te = _standardise(images[tr], images[te])
    return DataBundle(
        "digits", TensorPairs(x_tr, labels[tr]), TensorPairs(x_te, labels[te]), 1, 8, 10
    )


def synthetic(
    *, channels: int = 1, size: int = 8, classes: int = 10, n_train: int = 1600, n_test: int = 400
) -> DataBundle:
    """Class c: a grating at angle π·c/classes and a class-specific frequency, a random phase
    and contrast, plus Gaussian noise. Fixed seed, so the set is the same in every run."""
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    n = n_train + n_test
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=gen)]
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = math.pi * labels.double() / classes
    freq = 1.5 + (labels % 3).double()
    phase = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    proj = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    pattern = torch.sin(math.pi * freq[:, None, None] * proj + phase[:, None, None])
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    images = (contrast * pattern).unsqueeze(1).expand(n, channels, size, size)
    images = images + 0.6 * torch.randn(n, channels, size, size, generator=gen, dtype=torch.float64)
    images = images.float()
    x_tr, x_te = _standardise(images[:n_train], images[n_train:])
    return DataBundle(
        "synthetic",
        TensorPairs(x_tr, labels[:n_train]),
        TensorPairs(x_te, labels[n_train:]),
        channels,
        size,
        classes,
    )


def image_folder(path: Path, *, size: int | None = None) -> DataBundle:
    """``torchvision.datasets.ImageFolder`` over ``path`` (or its ``train``/``test`` parts)."""
    try:
        from torchvision import datasets, transforms
    except ImportError:
        raise bad_data(
            f"{option('data', str(path), as_given=True)}: reading an image folder needs "
            "torchvision, which is not installed",
            "pip install torchvision (the `vision` extra), or use "
            + by_face("--data digits|synthetic", "data='digits' or 'synthetic'"),
        ) from None
    train_dir = path / "train"
    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    split = test_dir is not None and train_dir.is_dir()
    try:
        probe = datasets.ImageFolder(str(train_dir if split else path))
        if len(probe) == 0:
            raise FileNotFoundError("no images")
        from PIL import Image  # a torchvision dependency; ImageFolder's loader forces RGB

        with Image.open(probe.samples[0][0]) as first:
            channels = 1 if first.mode in ("L", "1", "I", "I;16", "F", "LA") else 3
            side = size or min(first.size)
    except (OSError, RuntimeError) as exc:
        raise bad_data(
            f"{option('data', str(path), as_given=True)}: not an image folder ({exc})",
            "expected one subfolder of images per class (or train/ and test/ holding them)",
        ) from None
    steps = [transforms.Resize(side), transforms.CenterCrop(side)]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    tf = transforms.Compose(steps)
    if split:
        train = datasets.ImageFolder(str(train_dir), transform=tf)
        test = datasets.ImageFolder(str(test_dir), transform=tf)
    else:
        full = datasets.ImageFolder(str(path), transform=tf)
        tr, te = _stratified_split(torch.tensor(full.targets))
        train, test = Subset(full, tr.tolist()), Subset(full, te.tolist())
    return DataBundle(path.name, train, test, channels, side, len(probe.classes))

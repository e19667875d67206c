"""Data sets for ``odedsl train``: small, offline, deterministic.

* ``digits``: scikit-learn's 8×8 handwritten digits (1797 images, 1 channel, 10 classes), the
  ``data`` extra; a fixed stratified 80/20 split so every run tests on the same 359 images.
* ``synthetic``: class-dependent oriented gratings plus noise, learnable but not trivial; the
  fallback when scikit-learn is missing, and a data set of any size/channels for tests.
* a directory: ``torchvision.datasets.ImageFolder`` (``train/`` and ``test/`` or ``val/``
  subfolders when present, else a fixed 80/20 split), when torchvision is importable; scaled
  to [-1, 1] as read (not held in memory).

Everything in memory is standardised with the training set's per-channel mean and std.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, get_worker_info

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
    synthetic set and a directory's images (converted, resized); ``digits`` is always 1×8×8."""
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
        return image_folder(path, size=size, channels=channels)
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


class UnreadableImage(Exception):
    """An image a DataLoader worker process could not read. DataLoader re-raises a worker's
    exception in the training process as ``type(exc)(text)``, the text ending with the
    worker's last traceback line, so the diagnostic travels as one JSON line there."""

    @classmethod
    def carrying(cls, error: DslError) -> UnreadableImage:
        (first,) = error.diagnostics
        return cls(json.dumps({"message": first.message, "hint": first.hint}))

    def as_error(self) -> DslError:
        """The worker's diagnostic, for the training process to raise."""
        line = str(self).strip().splitlines()[-1]
        text = line.partition("UnreadableImage: ")[2] or line
        try:
            payload = json.loads(text)
            return bad_data(str(payload["message"]), str(payload["hint"]))
        except (ValueError, KeyError, TypeError):  # not this module's text: keep what it says
            return bad_data(f"cannot read an image ({line[:300]})", "see the message")


class FolderImages(Dataset[tuple[Tensor, int]]):
    """The images of a ``torchvision.datasets.ImageFolder`` through ``transform``, labelled
    by their place in ``classes`` (the training set's: ImageFolder numbers each folder's own
    classes, so a test folder missing one would shift the rest); an image that cannot be read
    is bad data naming the file (Pillow's error neither names it nor blames the data)."""

    def __init__(self, folder: Any, transform: Any, classes: list[str], data: str) -> None:
        self.folder, self.transform, self.data = folder, transform, data
        self.labels = [classes.index(name) for name in folder.classes]

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            image, label = self.folder[i]
        # PIL's UnidentifiedImageError, a truncated or damaged file, or one over Pillow's
        # pixel limit (DecompressionBombError, which is no OSError)
        except (OSError, Image.DecompressionBombError) as exc:
            why = "not an image file" if isinstance(exc, UnidentifiedImageError) else exc
            error = bad_data(
                f"{self.data}: cannot read image '{self.folder.samples[i][0]}' ({why})",
                "remove or replace the file (every image of the folder is read in training)",
            )
            if get_worker_info() is not None:  # a DataLoader worker process
                raise UnreadableImage.carrying(error) from None
            raise error from None
        return self.transform(image), self.labels[label]


def _gray(mode: str) -> bool:
    from PIL import ImageMode

    return ImageMode.getmode(mode).basemode == "L"


def image_folder(path: Path, *, size: int | None = None, channels: int | None = None) -> DataBundle:
    """``torchvision.datasets.ImageFolder`` over ``path``: its ``train/`` and ``test/`` (or
    ``val/``) when both are there (the test classes a subset of the training classes), else
    the folder, or a lone ``train/``, split 80/20 (stratified, fixed). Images are resized
    (shorter side) and centre-cropped to ``size`` (default: the first image's shorter side),
    scaled to [-1, 1], with ``channels`` 1 or 3 when asked, else 1 only when the first image
    of every class is grayscale (ImageFolder reads every image as RGB)."""
    data = option("data", str(path), as_given=True)
    try:
        from torchvision import datasets, transforms
    except ImportError:
        raise bad_data(
            f"{data}: reading an image folder needs torchvision, which is not installed",
            "pip install torchvision (the `vision` extra), or use "
            + by_face("--data digits|synthetic", "data='digits' or 'synthetic'"),
        ) from None
    from PIL import Image  # a torchvision dependency

    layout = "expected one subfolder of images per class (or train/ and test/ holding them)"
    train_dir, test_dir = path / "train", None
    notes: list[str] = []
    if train_dir.is_dir():
        test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
        if test_dir is None:
            notes.append(f"{data}: no test/ or val/ beside train/; testing on a fixed 20% of it")
    root = train_dir if train_dir.is_dir() else path
    try:
        folder = datasets.ImageFolder(str(root))
        if len(folder) == 0:
            raise FileNotFoundError("no images")
        firsts: dict[int, str] = {}  # each class's first image; samples[0] comes first
        for file, label in folder.samples:
            firsts.setdefault(label, file)
        sizes, modes = [], []
        for file in firsts.values():
            with Image.open(file) as image:
                sizes.append(image.size)
                modes.append(image.mode)
        side = size or min(sizes[0])
    except (OSError, RuntimeError, Image.DecompressionBombError) as exc:
        raise bad_data(f"{data}: not an image folder ({exc})", layout) from None
    classes = folder.classes
    if len(classes) < 2:
        nested = any(p.is_dir() for p in (root / classes[0]).iterdir())
        raise bad_data(
            f"{data}: one class folder ('{classes[0]}'); a classifier needs two or more",
            f"is the data one level down ({option('data', str(root / classes[0]), as_given=True)})?"
            if nested
            else layout,
        )
    test_folder = None
    if test_dir is not None:
        try:
            test_folder = datasets.ImageFolder(str(test_dir))
        except (OSError, RuntimeError) as exc:
            where = f"{data}: its {test_dir.name}/"
            raise bad_data(f"{where} is not an image folder ({exc})", layout) from None
        if not set(test_folder.classes) <= set(classes):
            extra = ", ".join(sorted(set(test_folder.classes) - set(classes)))
            raise bad_data(
                f"{data}: {test_dir.name}/ has classes train/ has not: {extra}",
                "the test classes must be training classes (folders of the same names)",
            )
    if channels not in (1, 3):
        channels = 1 if all(map(_gray, modes)) else 3
    steps = [transforms.Resize(side), transforms.CenterCrop(side)]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    tf = transforms.Compose(steps)
    train: Dataset[tuple[Tensor, int]] = FolderImages(folder, tf, classes, data)
    test: Dataset[tuple[Tensor, int]]
    if test_folder is not None:
        test = FolderImages(test_folder, tf, classes, data)
    else:
        tr, te = _stratified_split(torch.tensor(folder.targets))
        if len(te) == 0:
            raise bad_data(
                f"{data}: {len(folder)} images are too few to hold out a test set (a fixed 20% "
                "of each class)",
                "add images, or put them in train/ and test/ subfolders",
            )
        train, test = Subset(train, tr.tolist()), Subset(train, te.tolist())
    name = path.resolve().name or str(path)
    return DataBundle(name, train, test, channels, side, len(classes), notes)

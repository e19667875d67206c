"""A test double of torchvision: not torchvision, and not for use outside odedsl's tests.

torchvision cannot be installed where odedsl's tests run (its wheels pin another torch build),
so the code that reads image folders (``odedsl train --data DIR`` and the ``--data DIR`` of
the training script ``odedsl build`` writes) would never run in a test. This package stands in
for the small part of torchvision's API that code uses, written with Pillow and torch to follow
torchvision 0.20's documented behaviour on PIL images (``datasets.ImageFolder`` as in
``torchvision/datasets/folder.py``; the v1 ``transforms`` ``Compose``, ``Resize``,
``CenterCrop``, ``Grayscale``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``). Anything
else is absent, so a use of more of torchvision fails loudly here instead of passing untested.

Tests put the folder holding this package first on ``sys.path`` (or ``PYTHONPATH``).
"""

from torchvision import datasets, transforms

__version__ = "0.20.0+testdouble"
__all__ = ["datasets", "get_image_backend", "transforms"]


def get_image_backend() -> str:
    """The image backend: always PIL here (torchvision's default)."""
    return "PIL"

"""torchvision's v1 ``transforms`` on PIL images, as far as odedsl uses them (test double; see
the package docstring). Tensor inputs, other interpolations and ``max_size`` are not here."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor


def _pil(img: Any) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(
            f"img should be PIL Image (this test double handles no other). Got {type(img)}"
        )
    return img


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = transforms

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img


def resized_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """torchvision's ``_compute_resized_output_size``: one number sets the shorter side and
    scales the longer one, rounded down with ``int()``; two are (height, width)."""
    if isinstance(size, int):
        size = [size]
    if len(size) == 2:
        return size[0], size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


class Resize:
    """Bilinear (PIL's, which antialiases when shrinking); an image already of the output size
    is returned as it is."""

    def __init__(self, size: int | Sequence[int]) -> None:
        if not isinstance(size, int | Sequence):
            raise TypeError(f"Size should be int or sequence. Got {type(size)}")
        if isinstance(size, Sequence) and len(size) not in (1, 2):
            raise ValueError("If size is a sequence, it should have 1 or 2 values")
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = _pil(img).size
        new_h, new_w = resized_size(h, w, self.size)
        if (new_h, new_w) == (h, w):
            return img
        return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


class CenterCrop:
    """The centre ``size``, top and left offsets ``round((side - crop) / 2)``; a crop
    larger than the image pads it with zeros first (left/top get the smaller half)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        if isinstance(size, numbers.Number):
            self.size = (int(size), int(size))  # type: ignore[call-overload]
        elif isinstance(size, Sequence) and len(size) == 1:
            self.size = (size[0], size[0])
        elif isinstance(size, Sequence) and len(size) == 2:
            self.size = (size[0], size[1])
        else:
            raise ValueError("Please provide only two dimensions (h, w) for size.")

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = _pil(img).size
        crop_h, crop_w = self.size
        if crop_w > width or crop_h > height:
            pad = (
                (crop_w - width) // 2 if crop_w > width else 0,
                (crop_h - height) // 2 if crop_h > height else 0,
                (crop_w - width + 1) // 2 if crop_w > width else 0,
                (crop_h - height + 1) // 2 if crop_h > height else 0,
            )
            fill: Any = 0 if len(img.getbands()) == 1 else (0,) * len(img.getbands())
            img = ImageOps.expand(img, border=pad, fill=fill)
            width, height = img.size
            if (crop_w, crop_h) == (width, height):
                return img
        top = round((height - crop_h) / 2.0)
        left = round((width - crop_w) / 2.0)
        return img.crop((left, top, left + crop_w, top + crop_h))


class Grayscale:
    """PIL's ``convert("L")`` (ITU-R 601-2 luma); 3 output channels repeat it."""

    def __init__(self, num_output_channels: int = 1) -> None:
        self.num_output_channels = num_output_channels

    def __call__(self, img: Image.Image) -> Image.Image:
        gray = _pil(img).convert("L")
        if self.num_output_channels == 1:
            return gray
        if self.num_output_channels == 3:
            return Image.merge("RGB", (gray, gray, gray))
        raise ValueError("num_output_channels should be either 1 or 3")


class RandomHorizontalFlip:
    """Mirrors the image with probability ``p``, drawing ``torch.rand(1)`` (the global RNG)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:
            return _pil(img).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


class ToTensor:
    """H×W×C 8-bit pixels to a C×H×W float tensor in [0, 1] (mode ``1``: 0 or 1; modes ``I``,
    ``I;16`` and ``F`` keep their integer or float values, as in torchvision)."""

    def __call__(self, pic: Image.Image) -> Tensor:
        pic = _pil(pic)
        dtypes = {"I": np.int32, "I;16": np.int16, "F": np.float32}
        img = torch.from_numpy(np.array(pic, dtypes.get(pic.mode, np.uint8), copy=True))
        if pic.mode == "1":
            img = 255 * img
        img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
        img = img.permute((2, 0, 1)).contiguous()
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img


class Normalize:
    """``(x - mean) / std`` per channel, on a copy; a zero in ``std`` is a ValueError."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor: Tensor) -> Tensor:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
        if not tensor.is_floating_point():
            raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
        if tensor.ndim < 3:
            raise ValueError(
                "Expected tensor to be a tensor image of size (..., C, H, W). Got "
                f"tensor.size() = {tensor.size()}"
            )
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if (std == 0).any():
            raise ValueError(
                f"std evaluated to zero after conversion to {tensor.dtype}, "
                "leading to division by zero."
            )
        if mean.ndim == 1:
            mean = mean.view(-1, 1, 1)
        if std.ndim == 1:
            std = std.view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)

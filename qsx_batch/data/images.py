"""Decoding images the way every image dataset block of qsx-batch does: RGB, resized and center-cropped to the
block's ``image_size``, kept as uint8 until it reaches the device (normalization: :mod:`.sources`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image

from ..errors import UserError
from .sources import Normalization

IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_rgb(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """An image file as RGB (``name`` names it in the UserError of an unreadable file)."""
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UserError(f"Image {name or source} cannot be decoded ({exc}); remove or replace it.") from None


def _resized(image_size: int) -> int:
    return int(image_size * 256 / 224)


def crop_transform(image_size: int):
    """Resize the short side to ``image_size * 256 / 224`` (bilinear, antialiased), center-crop ``image_size``,
    uint8 C x H x W."""
    from torchvision import transforms as T

    resize = T.Resize(_resized(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    return T.Compose([resize, T.CenterCrop(image_size), T.PILToTensor()])


def crop_description(image_size: int) -> str:
    """What :func:`crop_transform` does, for the data cache key (without importing torchvision)."""
    return f"Resize({_resized(image_size)}, bilinear, antialias) CenterCrop({image_size}) PILToTensor"


class EncodedImage:
    """Decodes an encoded image (bytes of a JPEG or PNG) with ``transform``; picklable for DataLoader workers."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data: bytes, name: str) -> torch.Tensor:
        return self.transform(load_rgb(io.BytesIO(data), name))

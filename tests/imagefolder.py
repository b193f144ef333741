"""Small real image datasets for tests, written with PIL: an ImageFolder of JPEG files and webdataset tar shards."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG of a colour gradient with noise (sizes vary, so resizing and cropping matter)."""
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(40, 215, 3)
    pixels = np.clip(ramp + rng.normal(0, 30, (height, width, 3)) + rng.uniform(0, 40), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 12, seed: int = 0) -> Path:
    """``root/class<c>/<i>.jpg``: ``classes`` x ``per_class`` JPEG files between 36x30 and 60x52 pixels."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{i:03d}.jpg").write_bytes(jpeg_bytes(rng, int(rng.integers(36, 61)), int(rng.integers(30, 53))))
    return root


def write_shards(folder: Path, shards: int = 3, per_shard: int = 5, reference_names: int = 1, seed: int = 0,
                 ) -> list[int]:
    """``folder/train-<nnnn>.tar`` webdataset shards; the first ``reference_names`` shards name their files like
    the reference tool's (``<key>.input.jpeg`` + ``<key>.target.cls``), the others ``<key>.jpg`` + ``<key>.cls``.
    Returns every label written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for shard in range(shards):
        image_ext, label_ext = ("input.jpeg", "target.cls") if shard < reference_names else ("jpg", "cls")
        with tarfile.open(folder / f"train-{shard:04d}.tar", "w") as tar:
            for i in range(per_shard):
                label = int(rng.integers(0, 10))
                labels.append(label)
                for ext, data in ((image_ext, jpeg_bytes(rng, 40, 36)), (label_ext, str(label).encode())):
                    info = tarfile.TarInfo(f"sample{shard:04d}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return labels

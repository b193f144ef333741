"""A generated ImageFolder of realistic JPEG photos for ``bench/data_pipeline.py``.

Usage: ``python bench/imagefolder.py FOLDER [--images 4096] [--classes 8]``

Each image is 500x375 pixels (ImageNet's most common size): a colour gradient at a random angle, coarse colour
blotches, 6-15 filled shapes, a slight blur and sensor-like noise, saved at JPEG quality 93: about 100 KB, like an
ImageNet validation photo, so decoding costs what it costs on real data. Files already there are kept, so a
folder is generated once and reused; ``linked_folder`` makes a larger folder of symbolic links to them.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT, QUALITY, NOISE = 500, 375, 93, 14.0


def photo(seed: int) -> bytes:
    """One realistic JPEG (about 100 KB), the same for the same seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * xx / WIDTH + np.sin(angle) * yy / HEIGHT
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    blotches = rng.normal(128, 40, (HEIGHT // 25 + 1, WIDTH // 25 + 1, 3)).clip(0, 255).astype(np.uint8)
    blotches = np.asarray(Image.fromarray(blotches).resize((WIDTH, HEIGHT), Image.BICUBIC), np.float32) - 128
    image = Image.fromarray((start + ramp[..., None] * (end - start) + blotches).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 16))):
        x, y, w, h = rng.uniform(-50, WIDTH), rng.uniform(-50, HEIGHT), rng.uniform(20, 220), rng.uniform(20, 220)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
        else:
            corners = int(rng.integers(3, 7))
            draw.polygon([(x + rng.uniform(0, w), y + rng.uniform(0, h)) for _ in range(corners)], fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))), np.float32)
    pixels = (pixels + rng.normal(0, NOISE, pixels.shape)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def _write(job: tuple[Path, int]) -> None:
    path, seed = job
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(photo(seed))
        tmp.replace(path)


def image_paths(folder: Path, images: int, classes: int) -> list[Path]:
    """``folder/class<k>/<i>.jpg`` for image ``i`` of ``images`` (class ``i % classes``)."""
    return [folder / f"class{i % classes:02d}" / f"{i:06d}.jpg" for i in range(images)]


def generate(folder: Path, images: int = 4096, classes: int = 8) -> Path:
    """Write the missing images of the folder (in parallel, one process per CPU)."""
    paths = image_paths(folder, images, classes)
    for path in {p.parent for p in paths}:
        path.mkdir(parents=True, exist_ok=True)
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_write, [(path, i) for i, path in enumerate(paths)], chunksize=16)
    return folder


def linked_folder(source: Path, target: Path, images: int, classes: int, count: int) -> Path:
    """A folder of ``count`` images, symbolic links cycling over the ``images`` generated in ``source``."""
    originals = image_paths(source, images, classes)
    for i, link in enumerate(image_paths(target, count, classes)):
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(originals[i % images].resolve())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=8)
    args = parser.parse_args(argv)
    generate(args.folder, args.images, args.classes)
    sizes = [p.stat().st_size for p in image_paths(args.folder, args.images, args.classes)]
    print(f"{len(sizes)} images in {args.folder}, {np.mean(sizes) / 1024:.0f} KB on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Webdataset tar shards (``kind: webdataset``) for training, read with the standard library's tarfile.

``path`` is a brace pattern such as ``imagenet-train-{0000..0136}.tar`` (numeric ranges keep their zero padding;
``{a,b}`` lists work too). A sample is the run of consecutive tar members that share a key (the member name up to
the first dot of its file name): the image is ``<key>.input.jpeg`` (the reference tool's shards) or
``<key>.jpg|jpeg|png``, the label ``<key>.target.cls`` or ``<key>.cls`` (an integer as text). Each epoch reads
every shard once, in a shard order drawn from the training generator, through a shuffle buffer per worker.
"""

from __future__ import annotations

import random
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import UserError
from .sources import Batch, Normalization, decoding_workers, device_batches, normalizer

IMAGE_EXTENSIONS = ("input.jpeg", "input.jpg", "input.png", "jpg", "jpeg", "png")
LABEL_EXTENSIONS = ("target.cls", "cls")
SHUFFLE_BUFFER = 1000  # encoded samples per worker


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for: ``a{00..02}`` -> a00, a01, a02; ``{x,y}z`` -> xz, yz."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", match[1])
    if numbers:
        width = len(numbers[1])
        choices = [str(i).zfill(width) for i in range(int(numbers[1]), int(numbers[2]) + 1)]
    else:
        choices = match[1].split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def shard_paths(pattern: Path, what: str) -> list[Path]:
    """The existing tar files of a brace pattern (a UserError names a missing one)."""
    paths = [Path(name) for name in expand_braces(str(pattern))]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise UserError(f"Dataset {what}: {len(missing)} of the {len(paths)} tar shards of {pattern} do not exist, "
                        f"e.g. {missing[0]}.")
    return paths


def _sample(shard: Path, key: str, files: dict[str, bytes]) -> tuple[bytes, int]:
    image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
    label = next((files[ext] for ext in LABEL_EXTENSIONS if ext in files), None)
    if image is not None and label is not None and label.strip().isdigit():
        return image, int(label)
    raise UserError(f"Tar shard {shard}: sample '{key}' needs an image (.{', .'.join(IMAGE_EXTENSIONS)}) and an "
                    f"integer label (.{', .'.join(LABEL_EXTENSIONS)}); it has {sorted(files)}.")


def tar_samples(shard: Path) -> Iterator[tuple[bytes, int]]:
    """(encoded image, label) of every sample of one shard, in file order."""
    key, files = None, {}
    with tarfile.open(shard, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, name = member.name.rpartition("/")
            stem, _, extension = name.partition(".")
            if f"{folder}/{stem}" != key:
                if files:
                    yield _sample(shard, key, files)
                key, files = f"{folder}/{stem}", {}
            files[extension.lower()] = tar.extractfile(member).read()
    if files:
        yield _sample(shard, key, files)


class TarShards(IterableDataset):
    """The samples of tar shards in a shuffled order: worker ``i`` of ``n`` reads shards ``i, i+n, ...`` through a
    seeded shuffle buffer and decodes each image with ``decode``."""

    def __init__(self, shards: list[Path], decode: Callable[[bytes, str], torch.Tensor], seed: int):
        self.shards = shards
        self.decode = decode
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(f"{self.seed}-{worker}")
        buffer: list[tuple[bytes, int, str]] = []
        for shard in self.shards[worker::workers]:
            for position, (image, label) in enumerate(tar_samples(shard)):
                buffer.append((image, label, f"{shard} sample {position}"))
                if len(buffer) >= SHUFFLE_BUFFER:
                    pick = rng.randrange(len(buffer))
                    buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                    yield self._decoded(buffer.pop())
        rng.shuffle(buffer)
        for sample in buffer:
            yield self._decoded(sample)

    def _decoded(self, sample: tuple[bytes, int, str]) -> tuple[torch.Tensor, int]:
        image, label, name = sample
        return self.decode(image, name), label


@dataclass(eq=False)
class ShardStream:
    """A training block of ``total`` samples in tar shards (``what`` names it), read whole every epoch (no fixed
    subset: it cannot be scored, only trained on)."""

    shards: list[Path]
    total: int
    batch_size: int
    decode: Callable[[bytes, str], torch.Tensor]
    normalization: Normalization
    device: torch.device
    what: str

    def __post_init__(self):
        self.normalize = normalizer(self.normalization, self.device)

    def __len__(self) -> int:
        return self.total

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        """Every sample once; a UserError at the end when the shards held other than ``total_samples``."""
        order = torch.randperm(len(self.shards), generator=generator).tolist()
        seed = int(torch.randint(2 ** 31, (1,), generator=generator))
        data = TarShards([self.shards[i] for i in order], self.decode, seed)
        seen = 0
        for inputs, labels in device_batches(data, self.batch_size, decoding_workers(len(self.shards)), self.device):
            seen += len(labels)
            yield self.normalize(inputs), labels
        if seen != self.total:
            raise UserError(f"The {len(self.shards)} tar shards of {self.what} hold {seen} samples, but its "
                            f"total_samples is {self.total}; correct total_samples or the path pattern.")

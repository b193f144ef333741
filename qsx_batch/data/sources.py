"""Where the batches of a dataset block come from. Every source yields the batches of one fixed subset, in the
same order and with the same boundaries, normalized on the device, so a network scores the same on each:

- :class:`Samples`: the whole subset held in memory on the device (blocks within the memory budget);
- :class:`StreamingSamples`: decoded batch by batch through a DataLoader with decoding workers;
- :class:`~.cache.CachedSamples`: read batch by batch from a memory-mapped uint8 cache file.

Images stay uint8 until a batch is used, also in memory (a quarter of the float32 size); :class:`Normalization`
turns each batch into floats on the device (``x / 255``, then ``(x - mean) / std`` per channel: the arithmetic of
torchvision's ToTensor and Normalize).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from ..errors import UserError
from ..threads import allocation_cpus

Batch = tuple[torch.Tensor, torch.Tensor]
MAX_WORKERS = 32
PROGRESS_BATCHES = 8  # holding more batches than this in memory shows a progress bar (on a terminal)


def decoding_workers(batches: int) -> int:
    """DataLoader workers for ``batches`` batches: one per CPU of the allocation (at most one per batch and
    ``MAX_WORKERS``); none when that is a single one."""
    workers = min(allocation_cpus(), MAX_WORKERS, batches)
    return workers if workers > 1 else 0


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def normalizer(normalization: Normalization | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function a source applies to every batch on ``device`` (the identity for float datasets)."""
    if normalization is None:
        return lambda batch: batch
    mean = torch.tensor(normalization.mean).view(1, -1, 1, 1).to(device)
    std = torch.tensor(normalization.std).view(1, -1, 1, 1).to(device)
    return lambda batch: batch.float().div_(255).sub_(mean).div_(std)


@contextmanager
def worker_errors() -> Iterator[None]:
    """A UserError raised in a DataLoader worker reaches this process as a UserError whose text is the worker's
    traceback; keep only its message, so the user sees one paragraph."""
    try:
        yield
    except UserError as exc:
        text = str(exc)
        if "Original Traceback" not in text:
            raise
        raise UserError(text.rstrip().rpartition("UserError: ")[2]) from None


def _on_device(loader: DataLoader, device: torch.device) -> Iterator[Batch]:
    """A loader's batches, copied to ``device`` without waiting for the copy (pinned memory on a GPU)."""
    with worker_errors():
        for inputs, labels in loader:
            yield inputs.to(device, non_blocking=True), torch.as_tensor(labels).long().to(device, non_blocking=True)


def device_batches(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> Iterator[Batch]:
    """Batches of ``dataset`` in its order, loaded by ``workers`` processes, moved to ``device`` as they are."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator())  # leaves torch's seed alone
    return _on_device(loader, device)


class PassLoader:
    """One DataLoader for every pass over a map-style dataset, one pass at a time: its decoding workers start once
    and serve each pass (its batch sampler is the list of the current pass's batches, refilled as a pass starts),
    instead of starting again for every individual."""

    def __init__(self, dataset: Dataset, workers: int, device: torch.device):
        self.batches: list[list[int]] = []
        self.device = device
        self.loader = DataLoader(dataset, batch_sampler=self.batches, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                                 generator=torch.Generator())

    def run(self, batches: list[list[int]]) -> Iterator[Batch]:
        """The batches of dataset indices ``batches``, decoded and on the device."""
        self.batches[:] = batches
        yield from _on_device(self.loader, self.device)


class Source(Protocol):
    """What the Evaluator, calibration and training read a dataset block through."""

    batch_size: int
    normalization: Normalization | None

    def __len__(self) -> int: ...

    def batches(self, start: int = 0, stop: int | None = None, order: torch.Tensor | None = None) -> Iterator[Batch]:
        """Normalized batches of ``batch_size`` covering positions ``start:stop`` of the subset (of ``order``, a
        permutation of the positions, when given)."""

    def raw_batches(self, start: int = 0, stop: int | None = None,
                    order: torch.Tensor | None = None) -> Iterator[Batch]:
        """The same batches before normalization (uint8 images)."""

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        """One training pass over every sample in an order drawn from ``generator``."""


def progress(source: Source, title: str) -> Iterable[Batch]:
    """All raw batches of ``source``, with a progress bar on a terminal when there are many of them."""
    count = -(-len(source) // source.batch_size)
    return tqdm(source.raw_batches(), total=count, desc=title, unit="batch", leave=False,
                disable=None if count > PROGRESS_BATCHES else True)


class FixedSubset:
    """What the sources of a fixed subset share: position bounds, normalization and shuffled training epochs. A
    subclass sets ``batch_size``, ``normalization`` and ``normalize`` and yields its ``raw_batches``."""

    batch_size: int
    normalization: Normalization | None
    normalize: Callable[[torch.Tensor], torch.Tensor]

    def __len__(self) -> int:
        raise NotImplementedError

    def _stop(self, stop: int | None) -> int:
        return len(self) if stop is None else min(stop, len(self))

    def raw_batches(self, start: int = 0, stop: int | None = None,
                    order: torch.Tensor | None = None) -> Iterator[Batch]:
        raise NotImplementedError

    def batches(self, start: int = 0, stop: int | None = None, order: torch.Tensor | None = None) -> Iterator[Batch]:
        for inputs, labels in self.raw_batches(start, stop, order):
            yield self.normalize(inputs), labels

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        return self.batches(order=torch.randperm(len(self), generator=generator))


@dataclass(eq=False)
class Samples(FixedSubset):
    """Inputs (uint8 images, floats, or tokens) and labels (a class, or one per token) held in memory, used in
    batches of ``batch_size``."""

    inputs: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    normalization: Normalization | None = None

    def __post_init__(self):
        self.normalize = normalizer(self.normalization, self.inputs.device)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Samples:
        return Samples(self.inputs.to(device), self.labels.to(device), self.batch_size, self.normalization)

    def raw_batches(self, start: int = 0, stop: int | None = None,
                    order: torch.Tensor | None = None) -> Iterator[Batch]:
        stop = self._stop(stop)
        order = None if order is None else order.to(self.inputs.device)
        for first in range(start, stop, self.batch_size):
            last = min(first + self.batch_size, stop)
            if order is None:
                yield self.inputs[first:last], self.labels[first:last]
            else:
                rows = order[first:last]
                yield self.inputs[rows], self.labels[rows]

    @classmethod
    def gather(cls, source: Source, what: str) -> Samples:
        """Every raw batch of a streaming ``source``, held in memory on its device (a progress bar on a terminal
        when there are many batches)."""
        inputs = labels = None
        done = 0
        for batch_inputs, batch_labels in progress(source, f"loading {what}"):
            if inputs is None:
                inputs = batch_inputs.new_empty((len(source), *batch_inputs.shape[1:]))
                labels = batch_labels.new_empty((len(source), *batch_labels.shape[1:]))  # any label shape
            inputs[done:done + len(batch_labels)] = batch_inputs
            labels[done:done + len(batch_labels)] = batch_labels
            done += len(batch_labels)
        return cls(inputs, labels, source.batch_size, source.normalization)


@dataclass(eq=False)
class StreamingSamples(FixedSubset):
    """The subset ``index`` of a dataset, decoded batch by batch on every pass by DataLoader workers that start
    with the first pass and serve the others (:class:`PassLoader`)."""

    dataset: Dataset
    index: torch.Tensor
    batch_size: int
    normalization: Normalization | None
    device: torch.device

    def __post_init__(self):
        self.normalize = normalizer(self.normalization, self.device)
        self.in_memory = isinstance(self.dataset, TensorDataset)  # nothing to decode: no workers
        self._passes: PassLoader | None = None

    def __len__(self) -> int:
        return len(self.index)

    def resident_bytes(self) -> int:
        """Memory the subset takes when held (as the dataset gives it: uint8 images, or floats)."""
        first = self.dataset[int(self.index[0])][0]
        return len(self) * first.numel() * first.element_size()

    def raw_batches(self, start: int = 0, stop: int | None = None,
                    order: torch.Tensor | None = None) -> Iterator[Batch]:
        positions = slice(start, self._stop(stop))
        chosen = (self.index[positions] if order is None else self.index[order[positions]]).tolist()
        if self._passes is None:  # its workers, one per CPU up to one per batch of the whole subset, live on
            workers = 0 if self.in_memory else decoding_workers(-(-len(self) // self.batch_size))
            self._passes = PassLoader(self.dataset, workers, self.device)
        size = self.batch_size
        return self._passes.run([chosen[i:i + size] for i in range(0, len(chosen), size)])

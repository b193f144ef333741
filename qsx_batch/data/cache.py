"""The data cache: the fixed subset of a scored image-folder block, decoded ONCE into uint8 images at the crop
size, then read memory-mapped by every process of a run (array tasks, ``--resume``, ``evaluate``, ``retrain``)
instead of decoding the JPEGs again.

A cache entry is two ``.npy`` files in ``<results>/data-cache/``: ``<type>-<size>px-<hash>.npy`` (images, N x C x
H x W uint8) and ``<...>.labels.npy`` (int64). The hash covers what the content depends on: dataset type, root,
split, crop size and transform, the subset (``sample_limit``, ``randomize``, seed) and the torchvision and Pillow
versions. Files are written under a temporary name and renamed into place, labels first and images last: a
reader never sees a half-written file, and concurrent writers of one entry are harmless (same content, the last
rename wins).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, write_failure, writing
from .sources import Batch, FixedSubset, Normalization, Source, normalizer, progress

FORMAT = "qsx-batch-data-cache/1"


@dataclass
class MappedImages:
    """The images of a cache file, memory-mapped, and its labels."""

    mapping: mmap.mmap
    array: np.ndarray
    labels: torch.Tensor
    offset: int  # of the first image in the file

    def release(self) -> None:
        """Drop the pages read so far from this process's memory; they stay in the page cache for the next read
        (without this a pass over a large file would count it all in the process's resident memory)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self.mapping.madvise(mmap.MADV_DONTNEED)

    def prefetch(self, first: int, last: int) -> None:
        """Ask the kernel to read images ``first:last`` into the page cache in the background, so the next batch
        is in memory when it is copied out of the map."""
        if not hasattr(mmap, "MADV_WILLNEED") or last <= first:
            return
        row = self.array[0].nbytes
        start = self.offset + first * row
        aligned = start - start % mmap.PAGESIZE
        self.mapping.madvise(mmap.MADV_WILLNEED, aligned, start - aligned + (last - first) * row)


class Staging:
    """Host-to-device copies of batches read out of a map. On a GPU two page-locked buffers take turns: a copy
    from page-locked memory does not wait for the GPU's queued work, so the next batch is read while the GPU
    computes (from pageable memory the copy would be synchronous); a buffer is refilled once its last copy is
    done. Elsewhere a batch is copied out of the map into its own tensor."""

    def __init__(self, device: torch.device, images: tuple[int, ...], labels: tuple[int, ...], dtype: torch.dtype):
        self.device = device
        self.shapes = (images, labels, dtype)  # of a whole batch
        self.slots: list[tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]] = []
        self.turn = 0

    def put(self, images: np.ndarray, labels: torch.Tensor) -> Batch:
        if self.device.type != "cuda":
            return torch.from_numpy(np.array(images)).to(self.device), labels.to(self.device)
        if len(self.slots) < 2:  # allocated once: page-locking memory is slow
            shape, label_shape, dtype = self.shapes
            self.slots.append((torch.empty(shape, dtype=torch.uint8, pin_memory=True),
                               torch.empty(label_shape, dtype=dtype, pin_memory=True), torch.cuda.Event()))
        host_images, host_labels, done = self.slots[self.turn]
        self.turn = 1 - self.turn
        done.synchronize()  # this buffer's copy of two batches ago has finished
        n = len(labels)
        np.copyto(host_images[:n].numpy(), images)
        host_labels[:n].copy_(labels)
        batch = (host_images[:n].to(self.device, non_blocking=True), host_labels[:n].to(self.device, non_blocking=True))
        done.record()
        return batch


class CacheFile:
    """One cache entry, named by the hash of ``key`` (everything its content depends on) in ``folder``."""

    def __init__(self, folder: Path, key: dict):
        digest = hashlib.sha256(json.dumps({"format": FORMAT, **key}, sort_keys=True).encode()).hexdigest()
        stem = f"{key['type']}-{key['image_size']}px-{digest[:16]}"
        self.images_path = folder / f"{stem}.npy"
        self.labels_path = folder / f"{stem}.labels.npy"

    def exists(self) -> bool:
        return self.images_path.is_file() and self.labels_path.is_file()

    def write(self, source: Source, what: str) -> None:
        """Decode every batch of ``source`` (uint8 images on the CPU) into the entry's files."""
        suffix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        images_tmp = self.images_path.with_name(self.images_path.name + suffix)
        labels_tmp = self.labels_path.with_name(self.labels_path.name + suffix)
        labels = np.empty(len(source), dtype=np.int64)
        done = 0
        try:
            with writing(self.images_path):  # a failed write names the cache file
                self.images_path.parent.mkdir(parents=True, exist_ok=True)
                with open(images_tmp, "wb") as out:
                    for inputs, batch_labels in progress(source, f"caching {what}"):
                        array = inputs.numpy()
                        if not done:
                            header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                                      "shape": (len(source), *array.shape[1:])}
                            np.lib.format.write_array_header_1_0(out, header)
                        out.write(array.tobytes())
                        labels[done:done + len(batch_labels)] = batch_labels.numpy()
                        done += len(batch_labels)
                with open(labels_tmp, "wb") as out:
                    np.save(out, labels)
                os.replace(labels_tmp, self.labels_path)
                os.replace(images_tmp, self.images_path)
        except OSError as exc:
            if write_failure(exc):  # a full disk and its like: the command's own message, with how to continue
                raise
            raise UserError(f"Cannot write the data cache {self.images_path} for {what} ({exc.strerror or exc}). "
                            "It lives in the 'data-cache' folder of the workload's results folder: free space there "
                            "or choose another 'results' folder.") from None
        finally:
            images_tmp.unlink(missing_ok=True)
            labels_tmp.unlink(missing_ok=True)

    def open(self) -> MappedImages:
        """The entry's images (memory-mapped) and labels."""
        try:
            with open(self.images_path, "rb") as f:
                if np.lib.format.read_magic(f) != (1, 0):
                    raise ValueError("not a file qsx-batch wrote")
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            images = MappedImages(mapping, np.ndarray(shape, dtype, buffer=mapping, offset=offset),
                                  torch.from_numpy(np.load(self.labels_path)), offset)
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"Data cache file {self.images_path} cannot be read ({exc}); delete it and "
                            f"{self.labels_path.name} beside it, and run again to rebuild them.") from None
        if len(images.labels) != len(images.array):
            raise UserError(f"Data cache files {self.images_path} and {self.labels_path.name} do not belong together; "
                            "delete both and run again to rebuild them.")
        return images


@dataclass(eq=False)
class CachedSamples(FixedSubset):
    """A fixed subset read from a cache file batch by batch, normalized on the device."""

    images: MappedImages
    batch_size: int
    normalization: Normalization | None
    device: torch.device

    def __post_init__(self):
        self.labels = self.images.labels
        self.normalize = normalizer(self.normalization, self.device)
        size = self.batch_size
        self.staging = Staging(self.device, (size, *self.images.array.shape[1:]), (size, *self.labels.shape[1:]),
                               self.labels.dtype)

    def __len__(self) -> int:
        return len(self.labels)

    def resident_bytes(self) -> int:
        """Memory the subset takes when held (uint8)."""
        return self.images.array.nbytes

    def raw_batches(self, start: int = 0, stop: int | None = None,
                    order: torch.Tensor | None = None) -> Iterator[Batch]:
        stop = self._stop(stop)
        for first in range(start, stop, self.batch_size):
            last = min(first + self.batch_size, stop)
            rows = slice(first, last) if order is None else order[first:last].numpy()
            batch = self.staging.put(self.images.array[rows], self.labels[rows])
            self.images.release()
            if order is None:
                self.images.prefetch(last, min(last + self.batch_size, stop))
            yield batch

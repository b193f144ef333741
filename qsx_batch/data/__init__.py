"""Dataset registry: every dataset block becomes a source of batches of one fixed subset (:mod:`.sources`).

``sample_limit`` picks a FIXED subset (seeded by the workload seed when ``randomize`` is true, else the first
N samples), so every individual of a run is scored on exactly the same samples. A block whose subset fits the
memory budget (:mod:`.budget`) is held in memory on the device (images as uint8); a larger one is streamed batch
by batch. The subset of a scored image-folder block is decoded once into the data cache (:mod:`.cache`) and read
from there by every process. Webdataset tar shards (:mod:`.shards`) are for training blocks only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import UserError
from ..plugins import import_callable, is_import_reference
from ..workload import DatasetSpec
from .budget import MemoryBudget
from .cache import CachedSamples, CacheFile
from .embedded import embedded_mnist
from .images import IMAGENET, EncodedImage, crop_description, crop_transform, load_rgb
from .shards import ShardStream, shard_paths
from .sources import Normalization, Samples, Source, StreamingSamples

__all__ = ["DATASET_NAMES", "MemoryBudget", "Samples", "Source", "dataset_size", "open_block", "subset_indices"]

CIFAR = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
MNIST = Normalization((0.1307,), (0.3081,))
DATASET_NAMES = ("mnist_embedded", "mnist", "cifar10", "imagenet")
# The keys qsx-batch itself acts on; a user dataset callable gets every other key its block sets.
SUBSET_KEYS = {"type", "batch_size", "sample_limit", "randomize"}
CPU = torch.device("cpu")


@dataclass
class Opened:
    """A dataset of (input, label) pairs and how its uint8 images become floats (None: they are floats)."""

    dataset: Dataset
    normalization: Normalization | None


def _require_root(spec: DatasetSpec, root: Path | None) -> Path:
    if root is None:
        raise UserError(f"Dataset type '{spec.type}' needs a 'path' (the dataset's root folder).")
    if not root.exists() and not spec.download:
        raise UserError(
            f"Dataset path {root} (type '{spec.type}') does not exist. Point 'path' at the data, or set "
            "'download: true' to let torchvision fetch it."
        )
    return root


def _torchvision_dataset(spec: DatasetSpec, root: Path | None) -> Opened:
    import torchvision
    from torchvision import transforms as T

    train = (spec.split or "test") == "train"
    if spec.type == "mnist":
        return Opened(torchvision.datasets.MNIST(str(_require_root(spec, root)), train=train,
                                                 transform=T.PILToTensor(), download=spec.download), MNIST)
    if spec.type == "cifar10":
        return Opened(torchvision.datasets.CIFAR10(str(_require_root(spec, root)), train=train,
                                                   transform=T.PILToTensor(), download=spec.download), CIFAR)
    folder = _require_root(spec, root)
    return Opened(torchvision.datasets.ImageFolder(str(folder), transform=crop_transform(spec.image_size),
                                                   loader=load_rgb), IMAGENET)


def _user_dataset(spec: DatasetSpec, root: Path | None, what: str) -> Dataset:
    """``type: module.path:callable`` called with ``path=``, ``split=`` and every other key the block sets."""
    factory = import_callable(spec.type, "dataset type")
    given = {key: getattr(spec, key) for key in sorted(spec.model_fields_set - SUBSET_KEYS - {"path", "split"})}
    kwargs = {"path": str(root) if root else None, "split": spec.split,
              **{key: value for key, value in given.items() if value is not None}}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise UserError(f"Dataset {what}: '{spec.type}' cannot be called with {', '.join(kwargs)} ({exc}). A user "
                        "dataset callable gets path=, split= and every other key its block sets (all but "
                        f"{', '.join(sorted(SUBSET_KEYS))}).") from None
    except ValueError:
        pass  # no signature to check
    dataset = factory(**kwargs)
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise UserError(f"Dataset {what}: '{spec.type}' returned a {type(dataset).__name__}; it must return a "
                        "map-style torch Dataset (with len() and indexing) of (image tensor, label) pairs.")
    return dataset


def _open_dataset(spec: DatasetSpec, root: Path | None, what: str) -> Opened:
    if spec.type == "mnist_embedded":
        return Opened(TensorDataset(*embedded_mnist(spec.split)), None)
    if spec.type in ("mnist", "cifar10", "imagenet"):
        try:
            return _torchvision_dataset(spec, root)
        except (RuntimeError, FileNotFoundError) as exc:
            raise UserError(f"Dataset '{spec.type}' at {root} cannot be opened: {exc}") from None
    if is_import_reference(spec.type):
        return Opened(_user_dataset(spec, root, what), None)
    raise UserError(
        f"Unknown dataset type '{spec.type}'. Valid types: {', '.join(DATASET_NAMES)}, or your own as "
        "'module.path:callable' (called with path=, split= and the block's other keys, returning a torch Dataset)."
    )


def _open_nonempty(spec: DatasetSpec, root: Path | None, what: str) -> Opened:
    opened = _open_dataset(spec, root, what)
    if len(opened.dataset) == 0:
        raise UserError(f"Dataset {what} (type '{spec.type}', path {root}) is empty.")
    return opened


def _shards(root: Path | None, what: str) -> list[Path]:
    if root is None:
        raise UserError(f"Dataset {what} has kind webdataset but no 'path': give the pattern of its tar shards, "
                        "such as train-{0000..0136}.tar.")
    return shard_paths(root, what)


def dataset_size(spec: DatasetSpec, root: Path | None, what: str) -> int:
    """Open a dataset block and return its number of samples (UserError when it is empty or unusable)."""
    if spec.kind == "webdataset":
        _shards(root, what)
        return spec.total_samples
    return len(_open_nonempty(spec, root, what).dataset)


def subset_indices(total: int, spec: DatasetSpec, seed: int) -> torch.Tensor:
    """The fixed indices a dataset block selects: seeded random or the first ``sample_limit``."""
    limit = total if spec.sample_limit is None else min(spec.sample_limit, total)
    if spec.randomize and limit < total:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        return order[:limit].sort().values
    return torch.arange(limit)


def _subset(spec: DatasetSpec, root: Path | None, seed: int, what: str, device: torch.device) -> StreamingSamples:
    opened = _open_nonempty(spec, root, what)
    return StreamingSamples(opened.dataset, subset_indices(len(opened.dataset), spec, seed), spec.batch_size,
                            opened.normalization, device)


def cache_file(spec: DatasetSpec, root: Path | None, seed: int, folder: Path) -> CacheFile:
    """The data cache entry of an image-folder block: named by everything its decoded subset depends on (reading
    it needs neither the images, nor a scan of their folder, nor torchvision)."""
    limited = spec.sample_limit is not None
    return CacheFile(folder, {
        "type": spec.type, "root": str(root.resolve()) if root else None, "split": spec.split,
        "image_size": spec.image_size, "transform": crop_description(spec.image_size),
        "sample_limit": spec.sample_limit, "randomize": spec.randomize if limited else None,
        "seed": seed if limited and spec.randomize else None,
        "torchvision": version("torchvision"), "pillow": version("pillow"),
    })


def open_block(spec: DatasetSpec, root: Path | None, seed: int, what: str, device: torch.device,
               budget: MemoryBudget, cache_folder: Path | None = None) -> Source | ShardStream:
    """A dataset block (``what`` names it in messages) as a source of batches on ``device``.

    Its fixed subset is held in memory when its size (uint8 images, or floats) fits ``budget`` (claimed from it),
    else streamed.
    With a ``cache_folder``, an image-folder block is read from its data cache entry there, which is written
    first when missing. A webdataset block (training only) is a :class:`ShardStream`.
    """
    if spec.kind == "webdataset":
        decode = EncodedImage(crop_transform(spec.image_size))
        return ShardStream(_shards(root, what), spec.total_samples, spec.batch_size, decode, IMAGENET, device, what)
    if cache_folder is not None and spec.type == "imagenet":
        cache = cache_file(spec, root, seed, cache_folder)
        if not cache.exists():
            cache.write(_subset(spec, root, seed, what, CPU), what)
        source = CachedSamples(cache.open(), spec.batch_size, IMAGENET, device)
    else:
        source = _subset(spec, root, seed, what, device)
    return Samples.gather(source, what) if budget.claim(source.resident_bytes()) else source

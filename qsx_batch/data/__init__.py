"""Dataset registry: every dataset block becomes a fixed, preprocessed set of samples held in memory.

``sample_limit`` picks a FIXED subset (seeded by the workload seed when ``randomize`` is true, else the first
N samples), so every individual of a run is scored on exactly the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import UserError
from ..plugins import import_callable, is_import_reference
from ..workload import DatasetSpec
from .embedded import embedded_mnist

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASET_NAMES = ("mnist_embedded", "mnist", "cifar10", "imagenet")


@dataclass
class Samples:
    """Preprocessed inputs and integer labels, evaluated in batches of ``batch_size``."""

    inputs: torch.Tensor
    labels: torch.Tensor
    batch_size: int

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> "Samples":
        return Samples(self.inputs.to(device), self.labels.to(device), self.batch_size)

    def batches(self, start: int = 0, stop: int | None = None):
        """Yield (inputs, labels) batches of ``batch_size`` covering samples ``start:stop`` (all by default)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, self.batch_size):
            last = min(first + self.batch_size, stop)
            yield self.inputs[first:last], self.labels[first:last]


def _require_root(spec: DatasetSpec, root: Path | None) -> Path:
    if root is None:
        raise UserError(f"Dataset type '{spec.type}' needs a 'path' (the dataset's root folder).")
    if not root.exists() and not spec.download:
        raise UserError(
            f"Dataset path {root} (type '{spec.type}') does not exist. Point 'path' at the data, or set "
            "'download: true' to let torchvision fetch it."
        )
    return root


def _torchvision_dataset(spec: DatasetSpec, root: Path | None) -> Dataset:
    import torchvision
    from torchvision import transforms as T

    train = (spec.split or "test") == "train"
    if spec.type == "mnist":
        tf = T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
        return torchvision.datasets.MNIST(str(_require_root(spec, root)), train=train, transform=tf, download=spec.download)
    if spec.type == "cifar10":
        tf = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
        return torchvision.datasets.CIFAR10(str(_require_root(spec, root)), train=train, transform=tf, download=spec.download)
    folder = _require_root(spec, root)
    tf = T.Compose([
        T.Resize(int(spec.image_size * 256 / 224)),
        T.CenterCrop(spec.image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return torchvision.datasets.ImageFolder(str(folder), transform=tf)


def _open_dataset(spec: DatasetSpec, root: Path | None) -> Dataset | tuple[torch.Tensor, torch.Tensor]:
    if spec.type == "mnist_embedded":
        return embedded_mnist(spec.split)
    if spec.type in ("mnist", "cifar10", "imagenet"):
        try:
            return _torchvision_dataset(spec, root)
        except (RuntimeError, FileNotFoundError) as exc:
            raise UserError(f"Dataset '{spec.type}' at {root} cannot be opened: {exc}") from None
    if is_import_reference(spec.type):
        factory: Callable = import_callable(spec.type, "dataset type")
        return factory(path=str(root) if root else None, split=spec.split)
    raise UserError(
        f"Unknown dataset type '{spec.type}'. Valid types: {', '.join(DATASET_NAMES)}, "
        "or your own as 'module.path:callable' (called with path= and split=, returning a torch Dataset)."
    )


def _open_nonempty(spec: DatasetSpec, root: Path | None, what: str):
    data = _open_dataset(spec, root)
    total = len(data[1]) if isinstance(data, tuple) else len(data)
    if total == 0:
        raise UserError(f"Dataset {what} (type '{spec.type}', path {root}) is empty.")
    return data, total


def dataset_size(spec: DatasetSpec, root: Path | None, what: str) -> int:
    """Open a dataset block and return its number of samples (UserError when it is empty or unusable)."""
    return _open_nonempty(spec, root, what)[1]


def subset_indices(total: int, spec: DatasetSpec, seed: int) -> torch.Tensor:
    """The fixed indices a dataset block selects: seeded random or the first ``sample_limit``."""
    limit = total if spec.sample_limit is None else min(spec.sample_limit, total)
    if spec.randomize and limit < total:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        return order[:limit].sort().values
    return torch.arange(limit)


def load_samples(spec: DatasetSpec, root: Path | None, seed: int, what: str) -> Samples:
    """Open a dataset block and materialize its fixed subset as tensors; ``what`` names the block."""
    data, total = _open_nonempty(spec, root, what)
    index = subset_indices(total, spec, seed)
    if isinstance(data, tuple):
        inputs, labels = data[0][index], data[1][index]
    else:
        loader = DataLoader(Subset(data, index.tolist()), batch_size=spec.batch_size, shuffle=False)
        parts = [(x, torch.as_tensor(y)) for x, y in loader]
        inputs = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts]).long()
    return Samples(inputs.contiguous(), labels, spec.batch_size)

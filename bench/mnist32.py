"""A CIFAR-sized dataset for bench/search_efficiency.py: the embedded MNIST digits padded to 32x32 and repeated
over three channels (real images with real labels, so a trained ResNet has layers of different sensitivity)."""

import torch.nn.functional as F
from torch.utils.data import TensorDataset

from qsx_batch.data.embedded import embedded_mnist


def make(path=None, split=None):
    images, labels = embedded_mnist(split)
    padded = F.pad(images, (2, 2, 2, 2), value=float(images.min()))
    return TensorDataset(padded.repeat(1, 3, 1, 1), labels)

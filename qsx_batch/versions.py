"""Versions of the packages that decide a run's numbers (stored in every results file)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("qsx-batch", "torch", "torchvision", "pytorch-quantization", "pymoo", "h5py", "numpy", "submitit")


def package_versions() -> dict[str, str]:
    """Installed versions of the relevant packages, plus Python's and the CUDA and cuDNN that torch was built
    with ("none" for a CPU build)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import torch  # loaded by every caller already: runs are made with it

    out["cuda"] = torch.version.cuda or "none"
    out["cudnn"] = str(torch.backends.cudnn.version() or "none")
    return out

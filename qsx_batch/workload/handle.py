"""The handle of a loaded workload: its spec with the file it came from, and where its files go.

Inputs (model weights, dataset paths, a CSV ``initial_population``, energy tables) resolve against the workload
file's folder when used; outputs (``results``, ``calibration.file``) are relative to the working folder, where
runs are started.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from .schema import DATASET_SHORT_NAMES, DatasetSpec, WorkloadSpec

DEFAULT_WORKLOAD = "lenet5_mnist_quantization.yaml"


@dataclass(frozen=True)
class Workload:
    """A validated workload with the file it came from."""

    spec: WorkloadSpec
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def input_path(self, value: str) -> Path:
        """An input path (weights, data, tables) resolved against the workload file's folder."""
        return self.spec.input_path(value)

    def results_dir(self) -> Path:
        return Path(self.spec.results).expanduser()

    @staticmethod
    def dataset_key(name: str) -> str:
        """The dotted key of a dataset block named short (``exploration``, ``baseline``, ``reevaluate``) or dotted."""
        return DATASET_SHORT_NAMES.get(name, name)

    def dataset(self, name: str) -> DatasetSpec:
        """A dataset block by short name or dotted key such as ``retraining.datasets.validation``; a UserError
        names the choices when there is none."""
        block: Any = self.spec
        for part in self.dataset_key(name).split("."):
            block = getattr(block, part, None)
        if not isinstance(block, DatasetSpec):
            raise UserError(f"Workload {self.path} has no dataset block '{self.dataset_key(name)}'. "
                            f"Use one of {', '.join(DATASET_SHORT_NAMES)}, or a dotted key of a dataset block such "
                            "as retraining.datasets.validation.")
        return block

    def dataset_label(self, name: str) -> str:
        """A dataset block as the user wrote it: its role and its data, e.g. ``exploration: mnist_embedded
        validation`` (the split, else the folder name of its path)."""
        block = self.dataset(name)
        data = block.split or (Path(block.path).name if block.path else "")
        return f"{name}: {block.type} {data}".rstrip()

    def with_generations(self, generations: int) -> Workload:
        """The workload run for ``generations`` generations (same text: a resumed run still matches its file)."""
        nsga = self.spec.exploration.nsga.model_copy(update={"generations": generations})
        exploration = self.spec.exploration.model_copy(update={"nsga": nsga})
        return dataclasses.replace(self, spec=self.spec.model_copy(update={"exploration": exploration}))

    def dataset_blocks(self) -> dict[str, DatasetSpec]:
        """Every dataset block of the workload by dotted key, in file order."""
        return self.spec.dataset_blocks()

    def data_cache_folder(self) -> Path:
        """Where the decoded subsets of image-folder blocks are cached (qsx_batch.data.cache)."""
        return self.results_dir() / "data-cache"

    def calibration_file(self, fingerprint: str) -> Path:
        """``calibration.file``, or a file in the results folder named after the calibration fingerprint."""
        cal = self.spec.calibration
        if cal is not None and cal.file:
            return Path(cal.file).expanduser()
        return self.results_dir() / f"{self.name}.calib-{fingerprint[:10]}.pt"


def default_workload_path() -> Path:
    """The embedded default workload shipped inside the package."""
    return Path(str(resources.files("qsx_batch") / "workloads" / DEFAULT_WORKLOAD))

"""Workload files: YAML with a ``workload:`` root, validated against a strict pydantic schema.

Inputs (model weights, dataset paths) are resolved relative to the workload file's folder; outputs
(``results``, ``calibration.file``) relative to the working folder, where runs are started.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import UserError

DEFAULT_WORKLOAD = "lenet5_mnist_quantization.yaml"
DATASET_SHORT_NAMES = {"exploration": "exploration.datasets.exploration", "baseline": "exploration.datasets.baseline",
                       "reevaluate": "reevaluation.datasets.reevaluate"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatasetSpec(_Strict):
    """One dataset block: where the samples come from and how many of them are used."""

    type: str
    path: str | None = None
    split: str | None = None
    kind: str | None = Field(None, description="accepted for compatibility with the reference tool")
    batch_size: int = Field(256, gt=0)
    sample_limit: int | None = Field(None, gt=0)
    randomize: bool = Field(True, description="draw the fixed subset with the workload seed instead of the first N")
    download: bool = False
    image_size: int = Field(224, gt=0, description="crop size of ImageFolder datasets")


class CalibrationDatasets(_Strict):
    calibrate: DatasetSpec


class CalibrationSpec(_Strict):
    file: str | None = None
    samples: int | None = Field(None, gt=0, description="alias of datasets.calibrate.sample_limit")
    method: Literal["max", "histogram"] = "max"
    histogram_method: Literal["percentile", "mse", "entropy"] = "percentile"
    percentile: float = Field(99.99, gt=0, le=100)
    datasets: CalibrationDatasets


class ProblemSpec(_Strict):
    problem_function: str
    layer_types: list[Literal["Conv2d", "Linear"]] = ["Conv2d", "Linear"]
    skip_layers: list[str] = []


class ModelSpec(_Strict):
    type: str
    weights: str | None = None
    accuracy_function: Literal["classification_accuracy"] = "classification_accuracy"
    extra_args: dict[str, Any] = {}


class NsgaSpec(_Strict):
    pop_size: int = Field(20, ge=2)
    offsprings: int | None = Field(None, ge=1)
    generations: int = Field(10, ge=1)
    mutation_eta: float = Field(20.0, gt=0)
    mutation_prob: float = Field(0.9, ge=0, le=1)
    crossover_eta: float = Field(15.0, gt=0)
    crossover_prob: float = Field(0.9, ge=0, le=1)


class EnergySpec(_Strict):
    """DRAM energy model of ``energy_aware_quant_problem`` (docs/analysis.md)."""

    table: str | None = Field(None, description="CSV of per-layer DRAM transfers matched by layer name (relative to "
                                                "the workload file); default: the analytic model")
    buffer_bytes: int = Field(65536, ge=1, description="on-chip buffer of the analytic model [bytes]")
    pj_per_access: float = Field(640.0, gt=0, description="energy of one DRAM access [pJ]")
    access_bits: int = Field(32, ge=1, description="bits moved by one DRAM access")
    output_bits: int = Field(8, ge=1, le=32, description="bit width layer outputs are written back with")

    @field_validator("table")
    @classmethod
    def _relative_to_workload(cls, value: str | None, info: ValidationInfo) -> str | None:
        folder = (info.context or {}).get("folder")
        return str(Path(folder) / Path(value).expanduser()) if value and folder else value


class ExtraArgs(_Strict):
    num_bits_lower_limit: int = 2
    num_bits_upper_limit: int = 8
    bit_weighting_function: str = "bits_weighted_linear"
    discrete_threshold_steps: int = Field(16, ge=2)
    discrete_threshold_method: Literal["linear", "log", "continuous"] = "linear"
    threshold_limit: float = Field(1.0, gt=0)
    block_size: int = Field(8, ge=1)
    energy: EnergySpec = EnergySpec()

    @model_validator(mode="after")
    def _bit_limits(self) -> "ExtraArgs":
        lo, hi = self.num_bits_lower_limit, self.num_bits_upper_limit
        if lo < 2:
            raise ValueError(f"num_bits_lower_limit is {lo}; it must be at least 2")
        if hi > 32:
            raise ValueError(f"num_bits_upper_limit is {hi}; it must be at most 32")
        if lo > hi:
            raise ValueError(f"num_bits_lower_limit ({lo}) is greater than num_bits_upper_limit ({hi})")
        return self


class ExplorationDatasets(_Strict):
    exploration: DatasetSpec
    baseline: DatasetSpec | None = None


class RacingSpec(_Strict):
    """Racing evaluation: score on growing prefixes of the subset, stop individuals that cannot matter."""

    enabled: bool = False
    stages: list[float] = [0.125, 0.25, 0.5, 1.0]
    confidence: float = Field(0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _stages(self) -> "RacingSpec":
        stages = self.stages
        if not stages or any(s <= 0 or s > 1 for s in stages):
            raise ValueError(f"racing stages {stages} must be fractions in (0, 1]")
        if any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"racing stages {stages} must be strictly increasing")
        if stages[-1] != 1.0:
            self.stages = [*stages, 1.0]
        return self


class ExplorationSpec(_Strict):
    nsga: NsgaSpec = NsgaSpec()
    racing: RacingSpec = RacingSpec()
    minimum_accuracy: float | None = Field(None, ge=0, le=1)
    allowable_accuracy_drop: float | None = Field(None, ge=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    datasets: ExplorationDatasets
    extra_args: ExtraArgs = ExtraArgs()

    @model_validator(mode="after")
    def _one_constraint(self) -> "ExplorationSpec":
        if self.minimum_accuracy is not None and self.allowable_accuracy_drop is not None:
            raise ValueError("set either minimum_accuracy or allowable_accuracy_drop, not both")
        return self


class TrainingDatasets(_Strict):
    train: DatasetSpec
    validation: DatasetSpec | None = None


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    datasets: TrainingDatasets


class ReevaluationDatasets(_Strict):
    reevaluate: DatasetSpec


class ReevaluationSpec(_Strict):
    datasets: ReevaluationDatasets


class LaunchSpec(_Strict):
    """Defaults for ``qsx-batch launch`` (SLURM array jobs); the option of the same name on the command line wins."""

    partition: str | None = None
    gpus_per_task: int = Field(1, ge=0, description="GPUs per array task (--gres=gpu:N); 0 for CPU-only tasks")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per array task (sbatch --cpus-per-task); "
                                                             "each task runs that many torch threads")
    individuals_per_task: int = Field(4, ge=1)
    array_parallelism: int = Field(256, ge=1, description="array tasks running at once (sbatch --array=...%N)")
    time: int = Field(60, ge=1, description="time limit of one array task in minutes")
    mem: str | None = Field(None, description="memory per task, sbatch syntax (32G)")
    account: str | None = None
    qos: str | None = None
    container: str | None = Field(None, description="Apptainer image the tasks run their Python in")
    bind: list[str] = Field([], description="apptainer --bind entries SRC[:DST]")
    max_retries: int = Field(2, ge=0, description="resubmissions of unfinished individuals (and time-out requeues)")
    keep_jobs: bool = Field(False, description="leave queued and running tasks alone when the launcher stops")
    slurm_opt: dict[str, str | int | bool] = Field({}, description="any other sbatch option: {constraint: a100}")


class WorkloadSpec(_Strict):
    name: str | None = None
    seed: int = 0
    results: str = "results"
    problem: ProblemSpec
    model: ModelSpec
    calibration: CalibrationSpec | None = None
    exploration: ExplorationSpec
    training: TrainingSpec | None = None
    retraining: TrainingSpec | None = None
    reevaluation: ReevaluationSpec | None = None
    launch: LaunchSpec = LaunchSpec()


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
        """Resolve an input path (weights, data) relative to the workload file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path)

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

    def calibration_file(self, fingerprint: str) -> Path:
        """``calibration.file``, or a file in the results folder named after the calibration fingerprint."""
        cal = self.spec.calibration
        if cal is not None and cal.file:
            return Path(cal.file).expanduser()
        return self.results_dir() / f"{self.name}.calib-{fingerprint[:10]}.pt"


def default_workload_path() -> Path:
    """The embedded default workload shipped inside the package."""
    return Path(str(resources.files("qsx_batch") / "workloads" / DEFAULT_WORKLOAD))


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at ``loc`` (for did-you-mean suggestions)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        where = "workload." + ".".join(str(p) for p in loc) if loc else "workload"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc, WorkloadSpec)
            allowed = sorted(parent.model_fields) if parent else []
            hint = _did_you_mean(str(loc[-1]), allowed)
            lines.append(f"unknown key '{where}'.{hint} Allowed here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{where}'.")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"'{where}' = {err.get('input')!r}: {msg}.")
    return f"Workload {path} is invalid: " + " ".join(lines)


def parse_workload(text: str, path: Path) -> Workload:
    """Validate workload text; ``path`` names the file in messages and anchors relative inputs."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"Workload {path} is not valid YAML{where}: {exc.problem}.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"Workload {path} is not valid YAML: {exc}.") from None
    if not isinstance(data, dict) or "workload" not in data:
        raise UserError(f"Workload {path} must have a top-level 'workload:' mapping.")
    extra = sorted(set(data) - {"workload"})
    if extra:
        raise UserError(f"Workload {path} has unknown top-level keys {extra}; everything belongs under 'workload:'.")
    try:
        spec = WorkloadSpec.model_validate(data["workload"] or {}, context={"folder": path.resolve().parent})
    except ValidationError as exc:
        raise UserError(_format_errors(path, exc)) from None
    return Workload(spec=spec, path=path.resolve(), text=text)


def load_workload(path: str | Path | None) -> Workload:
    """Read and validate a workload file; ``None`` loads the embedded default."""
    path = default_workload_path() if path is None else Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"Workload file {path} does not exist.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"Workload file {path} cannot be read: {exc}.") from None
    return parse_workload(text, path)


def dump_workload(workload: Workload) -> str:
    """The resolved workload (defaults filled in) as YAML."""
    return yaml.safe_dump({"workload": workload.spec.model_dump(mode="json")}, sort_keys=False)

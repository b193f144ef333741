"""The workload schema: every key of a workload file, its default and what values it allows (strict pydantic).

Paths are kept as written; :meth:`WorkloadSpec.input_path` resolves an input against the workload file's folder
when it is used.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..plugins import is_import_reference

DATASET_SHORT_NAMES = {"exploration": "exploration.datasets.exploration", "baseline": "exploration.datasets.baseline",
                       "reevaluate": "reevaluation.datasets.reevaluate"}
TRAINING_BLOCKS = ("training.datasets.train", "retraining.datasets.train")  # read in shuffled epochs, never scored
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def did_you_mean(word: str, choices: list[str]) -> str:
    """A hint for a mistyped key: the closest of ``choices``, if any is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatasetSpec(_Strict):
    """One dataset block: where the samples come from and how many of them are used. A user dataset callable
    (``type: module.path:callable``) also takes the block's extra keys (reference-tool blocks carry keys such as
    ``data_root`` or ``severity``); a built-in type refuses them."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    type: str
    path: str | None = None
    split: str | None = None
    kind: Literal["imagefolder", "webdataset"] | None = Field(
        None, description="storage of an imagenet block: an ImageFolder (default) or webdataset tar shards")
    total_samples: int | None = Field(None, gt=0, description="samples in the tar shards of a webdataset block")
    batch_size: int = Field(256, gt=0)
    sample_limit: int | None = Field(None, gt=0)
    randomize: bool = Field(True, description="draw the fixed subset with the workload seed instead of the first N")
    download: bool = False
    image_size: int = Field(224, gt=0, description="crop size of ImageFolder datasets")

    @model_validator(mode="after")
    def _keys_of_the_type(self) -> DatasetSpec:
        if is_import_reference(self.type):
            return self  # a user callable gets every key it is given (qsx_batch.data)
        extra = sorted(self.model_extra or {})
        if extra:
            hints = "".join(did_you_mean(key, list(DatasetSpec.model_fields)) for key in extra)
            raise ValueError(f"unknown key{'s' * (len(extra) > 1)} {', '.join(map(repr, extra))} for dataset type "
                             f"'{self.type}'.{hints} Only user dataset callables (type: module.path:callable) take "
                             "extra keys, as keyword arguments; the keys of a dataset block are "
                             f"{', '.join(DatasetSpec.model_fields)}")
        if self.kind is not None and self.type != "imagenet":
            raise ValueError(f"kind '{self.kind}' is for type imagenet (or a user dataset callable), not '{self.type}'")
        if self.kind == "webdataset":
            if self.total_samples is None:
                raise ValueError("kind webdataset needs total_samples, the number of samples in its tar shards "
                                 "(tar files have no index to count them)")
            if self.sample_limit is not None:
                raise ValueError("kind webdataset reads its tar shards whole: leave sample_limit null")
        elif self.total_samples is not None:
            raise ValueError("total_samples is for kind webdataset (tar shards) only; other datasets count themselves")
        return self


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
    layer_types: list[Literal["Conv2d", "Linear", "AttentionMatmul"]] = Field(
        ["Conv2d", "Linear"], description="layers that get genes; AttentionMatmul: an attention's Q x K^T and "
                                          "softmax x V")
    skip_layers: list[str] = []
    gpu_id: int | None = Field(None, ge=-1, description="GPU index for explore, -1 = CPU (reference tool); "
                                                          "ignored by launch, where SLURM assigns GPUs")
    log_file: str | None = Field(None, description="log file of the run, relative to the results folder")
    clear_log_file: bool = Field(False, description="start log_file empty instead of appending to it")
    results_file: str | None = Field(None, description="results file of explore/launch (relative to the working "
                                                       "folder; a .pkl suffix becomes .h5); --output wins")


class ModelSpec(_Strict):
    type: str
    weights: str | None = None
    accuracy_function: str = Field("classification_accuracy", description="a built-in metric name or "
                                                                           "module.path:callable")
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


class ExtraArgs(_Strict):
    num_bits_lower_limit: int = 2
    num_bits_upper_limit: int = 8
    bit_weighting_function: str = "bits_weighted_linear"
    discrete_threshold_steps: int = Field(16, ge=2)
    discrete_threshold_method: Literal["linear", "log", "continuous"] = "linear"
    threshold_limit: float = Field(1.0, gt=0)
    block_size: int | list[int] = Field(8, description="tile width and height: B (a B x B square) or [width, height]")
    collect_sparsity_details: bool = Field(True, description="accepted from the reference tool; per-layer block "
                                                             "counts are always recorded")
    energy: EnergySpec = EnergySpec()

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int | list[int]) -> int | list[int]:
        sides = [value] if isinstance(value, int) else value
        if len(sides) not in (1, 2) or any(side < 1 for side in sides):
            raise ValueError("block_size is a positive integer (a square tile) or [width, height] of positive "
                             "integers")
        return value

    @property
    def block_shape(self) -> tuple[int, int]:
        """(height, width) of a tile: ``block_size`` B is B x B, ``[w, h]`` is h rows of w columns."""
        if isinstance(self.block_size, int):
            return self.block_size, self.block_size
        width, height = (self.block_size * 2)[:2]
        return height, width

    @model_validator(mode="after")
    def _bit_limits(self) -> ExtraArgs:
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
    stages: Literal["auto"] | list[float] = Field(
        "auto", description="auto: per generation, the (at most 3) prefixes that would have spent the fewest samples "
                            "on the previous generation, at a confidence shared by one individual's checks; or fixed "
                            "fractions of the subset, each check at the confidence")
    confidence: float = Field(0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _stages(self) -> RacingSpec:
        stages = self.stages
        if stages == "auto":
            return self
        if not stages or any(s <= 0 or s > 1 for s in stages):
            raise ValueError(f"racing stages {stages} must be fractions in (0, 1]")
        if any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"racing stages {stages} must be strictly increasing")
        if stages[-1] != 1.0:
            self.stages = [*stages, 1.0]
        return self


class EnergyEvaluationSpec(_Strict):
    """The reference tool's energy section of ``energy_aware_quant_problem``: its Timeloop DRAM table."""

    dram_analysis_file: str | None = Field(None, description="CSV written by the reference tool's "
                                                             "energy_analysis.py (per Conv2d layer, in model order)")
    input_shape: list[int] | None = Field(None, description="N, C, W, H the table was made for; checked against "
                                                            "the exploration data")

    @field_validator("input_shape")
    @classmethod
    def _four_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 4 or any(v < 1 for v in value)):
            raise ValueError("input_shape has four positive sizes: N, C, W, H")
        return value


Accuracy = Annotated[float, Field(ge=0, le=1)]
INITIAL_POPULATION_KINDS = ("auto", "random", "sensitivity")


class SensitivitySpec(_Strict):
    """The per-gene sweep of ``qsx-batch sensitivity`` and of ``initial_population: sensitivity``."""

    points: int = Field(8, ge=2, le=256, description="values per gene: every whole value of an integer range (at "
                                                     "most this many, evenly spread), or this many evenly spaced "
                                                     "continuous thresholds")
    loss_budgets: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        [0.0, 0.002, 0.005, 0.01, 0.02, 0.05], min_length=1,
        description="accuracy losses (points below the sweep's all-neutral accuracy); per budget one starting "
                    "individual per price (the measured loss, the share of labels lost, the share changed): the "
                    "cheapest setting whose summed single-gene prices stay within it")
    sweep: Literal["adaptive", "full"] = Field(
        "adaptive", description="adaptive: each gene from its most aggressive value toward neutral until a value "
                                "loses no label (the rest is never a budget's cheapest choice), raced; full: every "
                                "point (a complete heat map)")
    sample_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the exploration samples each sweep point is scored on (the first ones "
                                     "of the fixed subset, in whole batches): a cheaper, noisier sweep; below 1 the "
                                     "search scores a swept genome again instead of taking its result")


class ExplorationSpec(_Strict):
    nsga: NsgaSpec = NsgaSpec()
    racing: RacingSpec = RacingSpec()
    minimum_accuracy: Accuracy | list[Accuracy] | None = Field(
        None, description="lowest accuracy; a list: one bound per metric of the accuracy function")
    allowable_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="lowest accuracy as a FRACTION of the fp32 baseline: baseline * (1 - drop)")
    allowable_absolute_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="lowest accuracy as the fp32 baseline minus this many accuracy points")
    predefined_parameters: list[float] = Field(
        [], description="initial individuals: each value in every gene (a threshold for sparsity, bits for "
                        "quantization), put into the first generation")
    initial_population: str | list[list[float]] = Field(
        "auto", description="generation 0 besides pymoo's random individuals: auto (sensitivity for quantization "
                            "problems, where it reached the random start's final front in under half the samples; "
                            "random for sparsity and joint problems, where it is not measured), random (nothing "
                            "more), sensitivity (settings derived from the sensitivity sweep), a list of individuals "
                            "(one parameter per gene: bits or thresholds), or a CSV file with one column per gene "
                            "name (e.g. written by 'qsx-batch inspect --csv'; relative to the workload file)")
    sensitivity: SensitivitySpec = SensitivitySpec()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_math: Literal["tf32", "strict", "integer"] = Field(
        "tf32", description="float math of convolutions and matmuls on a GPU: tf32 (TensorFloat-32 in cuDNN and "
                            "matmuls, faster; rounds the dequantized values to 10 bits of mantissa), strict (IEEE "
                            "fp32, the CPU's numbers up to summation order; tf32 and strict: no effect on the CPU), "
                            "or integer (quantized Conv2d and Linear layers compute on the integer values of their "
                            "inputs and weights and rescale per output channel: exact products in TF32, as integer "
                            "hardware; on every device; quantization problems only); stored with the run")
    data_memory_budget: int | None = Field(
        None, ge=0, description="bytes of dataset blocks a process may hold on its device (images as uint8); larger "
                                "blocks are streamed batch by batch. Default: a quarter of the device's memory")
    datasets: ExplorationDatasets
    extra_args: ExtraArgs = ExtraArgs()
    energy_evaluation: EnergyEvaluationSpec | None = None

    @field_validator("initial_population")
    @classmethod
    def _population_source(cls, value: str | list[list[float]]) -> str | list[list[float]]:
        if isinstance(value, list) or value in INITIAL_POPULATION_KINDS or value.lower().endswith(".csv"):
            return value
        raise ValueError(f"'{value}' is none of auto, random, sensitivity, a list of individuals (one parameter per "
                         "gene), or a .csv file of parameters")

    @field_validator("data_memory_budget", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_constraint(self) -> ExplorationSpec:
        given = [key for key in ("minimum_accuracy", "allowable_accuracy_drop", "allowable_absolute_accuracy_drop")
                 if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set one accuracy constraint, not {' and '.join(given)}")
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
    bit_weighting_function: str | None = Field(None, description="reference tool: must equal the exploration's "
                                                                 "cost function (re-evaluations use the run's cost)")
    datasets: ReevaluationDatasets


class LaunchSpec(_Strict):
    """Defaults for ``qsx-batch launch`` (SLURM array jobs); the option of the same name on the command line wins."""

    partition: str | None = None
    workers: Literal["persistent", "per-generation"] = Field(
        "persistent", description="persistent: one array job serves the whole run; per-generation: new array "
                                  "jobs for every stage")
    tasks: int | None = Field(None, ge=1, description="persistent tasks (default: population / individuals_per_task, "
                                                      "rounded up, at most array_parallelism)")
    lease: int = Field(180, ge=10, description="seconds a persistent task waits for a silent launcher, then ends")
    gpus_per_task: int = Field(1, ge=0, description="GPUs per array task (--gres=gpu:N); 0 for CPU-only tasks; a "
                                                    "persistent task runs one evaluator per GPU")
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
    _folder: Path | None = PrivateAttr(None)  # the workload file's folder; loading sets it, copies keep it

    def input_path(self, value: str) -> Path:
        """An input path (weights, data, a CSV or energy table) as written in the workload, resolved against the
        workload file's folder at the moment of use: the spec keeps it as written, so a copy of the workload in
        another folder is the same workload with its inputs there."""
        path = Path(value).expanduser()
        return path if path.is_absolute() or self._folder is None else self._folder / path

    @model_validator(mode="before")
    @classmethod
    def _weighting_function_alias(cls, data: Any) -> Any:
        """``model.extra_args.weighting_function`` (reference tool) names the cost function: it is not passed to
        the model's constructor, and must agree with ``exploration.extra_args.bit_weighting_function``."""
        model = data.get("model") if isinstance(data, dict) else None
        extra = model.get("extra_args") if isinstance(model, dict) else None
        if not isinstance(extra, dict) or "weighting_function" not in extra:
            return data
        alias = extra["weighting_function"]
        exploration = data.get("exploration") if isinstance(data.get("exploration"), dict) else {}
        args = exploration.get("extra_args") if isinstance(exploration.get("extra_args"), dict) else {}
        given = args.get("bit_weighting_function")
        if given is not None and given != alias:
            raise ValueError(f"model.extra_args.weighting_function '{alias}' and exploration.extra_args."
                             f"bit_weighting_function '{given}' name different cost functions; keep one")
        model = {**model, "extra_args": {k: v for k, v in extra.items() if k != "weighting_function"}}
        args = {**args, "bit_weighting_function": alias}
        return {**data, "model": model, "exploration": {**exploration, "extra_args": args}}

    @model_validator(mode="after")
    def _one_device(self) -> WorkloadSpec:
        gpu, device = self.problem.gpu_id, self.exploration.device
        if gpu is not None and (device == "cpu" and gpu >= 0 or device == "cuda" and gpu == -1):
            raise ValueError(f"problem.gpu_id {gpu} and exploration.device '{device}' disagree; keep one of them")
        return self

    @model_validator(mode="after")
    def _one_cost_function(self) -> WorkloadSpec:
        again = self.reevaluation.bit_weighting_function if self.reevaluation else None
        cost = self.exploration.extra_args.bit_weighting_function
        if again is not None and again != cost:
            raise ValueError(f"reevaluation.bit_weighting_function '{again}' differs from the exploration's "
                             f"bit_weighting_function '{cost}'; qsx-batch scores re-evaluations with the run's own "
                             "cost function, so remove the key or make the two equal")
        return self

    def dataset_blocks(self) -> dict[str, DatasetSpec]:
        """Every dataset block of the workload by dotted key, in file order."""
        def walk(model: BaseModel, prefix: str) -> dict[str, DatasetSpec]:
            found: dict[str, DatasetSpec] = {}
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, DatasetSpec):
                    found[prefix + name] = value
                elif isinstance(value, BaseModel):
                    found.update(walk(value, f"{prefix}{name}."))
            return found

        return walk(self, "")

    @model_validator(mode="after")
    def _shards_only_for_training(self) -> WorkloadSpec:
        for key, block in self.dataset_blocks().items():
            if block.kind == "webdataset" and key not in TRAINING_BLOCKS and not is_import_reference(block.type):
                raise ValueError(
                    f"workload.{key} has kind webdataset, but tar shards are read in sequence and only training blocks "
                    f"({', '.join(TRAINING_BLOCKS)}) may be read so; a scored block needs a fixed subset with random "
                    "access: use kind imagefolder")
        return self


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512M``, ``2G``, ``1.5G``, ``64KiB`` or ``1000`` (binary units, as sbatch)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ValueError("must be a size such as 512M, 2G, 1.5G or a number of bytes")
    return int(float(match[1]) * SIZE_UNITS[match[2].lower()])

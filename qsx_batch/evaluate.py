"""Prepare a model, its problem and its data once; then score genomes on them one by one.

This is the single code path behind ``explore`` (in-process) and the SLURM array-task workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .calibration import apply_amax, calibrate, load_calibration, save_calibration
from .data import Samples, load_samples
from .errors import UserError
from .models import build_model, load_weights
from .problems import Problem, QuantizationProblem, problem_class
from .problems.layers import profile_layers, target_layers
from .racing import STATUS_RACED_OUT, RaceContext, stage_sizes
from .result import STATUS_FAILED, STATUS_OK, IndividualResult
from .workload import DatasetSpec, Workload


def workload_device(workload: Workload, override: str | None = None) -> torch.device:
    """The device a command runs on: ``override`` (``--device``), else ``exploration.device``; ``auto`` picks the
    GPU when one is visible."""
    name = override or workload.spec.exploration.device
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("The device is 'cuda' (--device or exploration.device) but no GPU is visible; use 'auto' or "
                        "'cpu'.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_block(workload: Workload, spec: DatasetSpec, what: str) -> Samples:
    """Materialize one dataset block of the workload (paths relative to the workload file)."""
    root = workload.input_path(spec.path) if spec.path else None
    return load_samples(spec, root, workload.spec.seed, what)


def load_model(workload: Workload, device: torch.device) -> torch.nn.Module:
    """The network with its weights, in eval mode, on ``device``."""
    mspec = workload.spec.model
    model = build_model(mspec.type, mspec.extra_args)
    if mspec.weights:
        load_weights(model, workload.input_path(mspec.weights), mspec.type)
    return model.eval().to(device)


def calibration_fingerprint(workload: Workload) -> dict:
    """What a calibration depends on: model, weights, quantized layers, calibration data and method, seed."""
    spec = workload.spec
    return {
        "model": spec.model.model_dump(mode="json"),
        "calibration": spec.calibration.model_dump(mode="json", exclude={"file"}) if spec.calibration else None,
        "layers": spec.problem.model_dump(mode="json", exclude={"problem_function"}),
        "seed": spec.seed,
    }


def calibration_path(workload: Workload) -> Path:
    """Where the workload's calibration is stored (default name carries a hash of its fingerprint)."""
    text = json.dumps(calibration_fingerprint(workload), sort_keys=True)
    return workload.calibration_file(hashlib.sha256(text.encode()).hexdigest())


def calibration_samples(workload: Workload) -> Samples:
    cal = workload.spec.calibration
    if cal is None:
        raise UserError(f"Workload {workload.path}: a quantization problem needs a 'calibration' section.")
    block = cal.datasets.calibrate
    if cal.samples is not None and block.sample_limit is None:
        block = block.model_copy(update={"sample_limit": cal.samples})
    return load_block(workload, block, "calibration.datasets.calibrate")


def ensure_calibration(workload: Workload, problem: QuantizationProblem, device: torch.device,
                       force: bool = False) -> tuple[str, bool]:
    """Load the calibration file, or calibrate and write it when missing or ``force``; returns (path, computed)."""
    path = calibration_path(workload)
    fingerprint = calibration_fingerprint(workload)
    if path.exists() and not force:
        amax, stored = load_calibration(path)
        if stored and stored != fingerprint:
            raise UserError(
                f"Calibration file {path} was made for a different model, weights or calibration setting. "
                "Run 'qsx-batch calibrate WORKLOAD --force' to redo it, or set calibration.file to another path."
            )
        apply_amax(problem.quantizers, amax, path, device)
        return str(path), False
    cal = workload.spec.calibration
    samples = calibration_samples(workload).to(device)
    problem.configure(None)
    amax = calibrate(problem.model, problem.quantizers, samples, cal.method, cal.histogram_method, cal.percentile)
    try:
        save_calibration(path, amax, fingerprint)
    except OSError as exc:
        raise UserError(f"Cannot write calibration file {path}: {exc}.") from None
    return str(path), True


def build_problem(workload: Workload, device: torch.device, calibrate: bool = True) -> Problem:
    """Model + problem for the workload; a quantization problem is calibrated unless ``calibrate`` is false."""
    spec = workload.spec
    cls = problem_class(spec.problem.problem_function)
    model = load_model(workload, device)
    modules = target_layers(model, spec.problem.layer_types, spec.problem.skip_layers)
    probe = load_block(workload, spec.exploration.datasets.exploration.model_copy(update={"sample_limit": 1}), "probe")
    layers = profile_layers(model, modules, probe.inputs.to(device))
    extra = spec.exploration.extra_args
    if issubclass(cls, QuantizationProblem):
        problem = cls(model, layers, extra, spec.calibration.method if spec.calibration else "max")
        if calibrate:
            ensure_calibration(workload, problem, device)
    else:
        problem = cls(model, layers, extra, device)
    model.eval()
    return problem


def _slurm_fields() -> dict:
    env = os.environ
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", "")
    task = env.get("SLURM_ARRAY_TASK_ID")
    return {"slurm_job_id": job, "slurm_array_task_id": int(task) if task else -1, "node": env.get("SLURMD_NODENAME", "")}


@dataclass
class Evaluator:
    """Scores genomes of one problem on fixed, preloaded sample sets (named 'exploration', 'baseline', ...)."""

    problem: Problem
    samples: dict[str, Samples]
    device: torch.device

    def __post_init__(self):
        self.host = socket.gethostname()
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else ""
        self.slurm = _slurm_fields()

    def _forward(self, samples: Samples, start: int, stop: int) -> int:
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            for inputs, labels in samples.batches(start, stop):
                correct += (self.problem.model(inputs).argmax(1) == labels).sum()
        return int(correct)

    def _race(self, samples: Samples, params: np.ndarray, race: RaceContext | None) -> tuple[int, int, tuple]:
        """Forward over the stages; returns (correct, samples used, (reason, low, high) or ())."""
        total = len(samples)
        sizes = stage_sizes(list(race.stages), total, samples.batch_size) if race else [total]
        correct = done = 0
        for n in sizes:
            correct += self._forward(samples, done, n)
            done = n
            if race is not None and n < total:
                created = self.problem.read_counts()[2]
                verdict = race.stop_reason(correct, n, self.problem.cost(params, created, n))
                if verdict[0]:
                    return correct, done, verdict
        return correct, done, ()

    def evaluate(self, genome: np.ndarray | None, dataset: str = "exploration",
                 race: RaceContext | None = None) -> IndividualResult:
        """Score one genome (``None``: the fp32 network) on a named sample set; errors become a failed result.

        With a race context the genome is scored stage by stage and may stop early (status ``raced_out``).
        """
        start = time.perf_counter()
        samples = self.samples[dataset]
        lo, _ = self.problem.bounds
        vector = np.full(len(lo), np.nan) if genome is None else np.asarray(genome, dtype=float)
        n_layers = len(self.problem.layers)
        ci = (np.nan, np.nan)
        try:
            self.problem.configure(genome)
            params = self.problem.fp32_params() if genome is None else self.problem.decode(genome)
            correct, used, raced = self._race(samples, params, race)
            total, already, created = self.problem.read_counts()
            accuracy = correct / used
            cost = self.problem.cost(params, created, used)
            status, error = STATUS_OK, ""
            if raced:
                status, error, ci = STATUS_RACED_OUT, raced[0], raced[1:]
        except Exception as exc:  # one bad individual must not stop a search; the error is recorded
            params = np.full(len(lo), np.nan)
            correct, used, accuracy, cost = 0, len(samples), 0.0, self.problem.worst_cost()
            total = already = created = np.zeros(n_layers, dtype=np.int64)
            status, error = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
        return IndividualResult(
            genome=vector, params=params, accuracy=accuracy, correct=correct, samples=used, cost=cost,
            blocks_total=total, blocks_already=already, blocks_created=created,
            eval_seconds=time.perf_counter() - start, host=self.host, device=str(self.device), status=status,
            error=error, gpu=self.gpu, ci_low=float(ci[0]), ci_high=float(ci[1]), **self.slurm,
        )


def prepare_evaluator(workload: Workload, device: torch.device | None = None,
                      datasets: tuple[str, ...] = ("exploration", "baseline")) -> Evaluator:
    """Load model, calibration and the named exploration datasets once; return an Evaluator."""
    device = device or workload_device(workload)
    problem = build_problem(workload, device)
    blocks = workload.spec.exploration.datasets
    samples = {}
    for name in datasets:
        spec = getattr(blocks, name, None) or blocks.exploration
        samples[name] = load_block(workload, spec, f"exploration.datasets.{name}").to(device)
    return Evaluator(problem, samples, device)

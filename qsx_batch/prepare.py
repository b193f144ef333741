"""From a workload to what an evaluation needs: the device, the model with its weights, its problem (calibrated
when it quantizes) and the dataset blocks, each opened once per process: held in memory on the device within the
workload's memory budget, streamed beyond it (qsx_batch.data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .calibration import apply_amax, calibrate, load_calibration, save_calibration
from .data import MemoryBudget, Source, open_block
from .data.budget import memory_budget
from .errors import UserError
from .evaluator import Evaluator
from .models import build_model, load_weights
from .models.layers import LayerInfo, profile_layers, target_layers
from .problems import Problem, create_problem
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


def data_budget(workload: Workload, device: torch.device) -> MemoryBudget:
    """The memory budget of the dataset blocks one process holds: ``exploration.data_memory_budget``, by default a
    quarter of ``device``'s memory."""
    return memory_budget(workload.spec.exploration.data_memory_budget, device)


def load_block(workload: Workload, spec: DatasetSpec, what: str, device: torch.device = torch.device("cpu"),
               budget: MemoryBudget | None = None, cached: bool = True) -> Source:
    """One dataset block of the workload (paths relative to the workload file) on ``device``, held in memory when
    it fits ``budget`` (default: the workload's), else streamed. A scored image-folder block is read from the data
    cache in the results folder (written first when missing); ``cached=False`` (training blocks) decodes instead."""
    root = workload.input_path(spec.path) if spec.path else None
    return open_block(spec, root, workload.spec.seed, what, device, budget or data_budget(workload, device),
                      workload.data_cache_folder() if cached else None)


def load_model(workload: Workload, device: torch.device) -> torch.nn.Module:
    """The network with its weights, in eval mode, on ``device``."""
    mspec = workload.spec.model
    model = build_model(mspec.type, mspec.extra_args)
    if mspec.weights:
        load_weights(model, workload.input_path(mspec.weights), mspec.type)
    return model.eval().to(device)


def profile_model(workload: Workload, device: torch.device) -> tuple[torch.nn.Module, list[LayerInfo]]:
    """The network and its target layers, profiled with one exploration sample (input shapes, MACs)."""
    spec = workload.spec
    model = load_model(workload, device)
    modules = target_layers(model, spec.problem.layer_types, spec.problem.skip_layers)
    probe = load_block(workload, spec.exploration.datasets.exploration, "exploration.datasets.exploration", device,
                       MemoryBudget(0))
    inputs, _ = next(iter(probe.batches(0, 1)))
    return model, profile_layers(model, modules, inputs)


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


def calibration_samples(workload: Workload, device: torch.device) -> Source:
    """The calibration block, limited to ``calibration.samples`` when that is set."""
    cal = workload.spec.calibration
    if cal is None:
        raise UserError(f"Workload {workload.path}: a quantization problem needs a 'calibration' section.")
    block = cal.datasets.calibrate
    if cal.samples is not None and block.sample_limit is None:
        block = block.model_copy(update={"sample_limit": cal.samples})
    return load_block(workload, block, "calibration.datasets.calibrate", device)


def ensure_calibration(workload: Workload, problem: Problem, device: torch.device,
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
    samples = calibration_samples(workload, device)
    problem.configure(None)
    amax = calibrate(problem.model, problem.quantizers, samples, cal.method, cal.histogram_method, cal.percentile)
    try:
        save_calibration(path, amax, fingerprint)
    except OSError as exc:
        raise UserError(f"Cannot write calibration file {path}: {exc}.") from None
    return str(path), True


def build_problem(workload: Workload, device: torch.device, calibrate: bool = True) -> Problem:
    """Model + problem for the workload; a problem with quantizers is calibrated unless ``calibrate`` is false."""
    model, layers = profile_model(workload, device)
    problem = create_problem(workload.spec, model, layers)
    if calibrate and problem.needs_calibration:
        ensure_calibration(workload, problem, device)
    model.eval()
    return problem


def search_datasets(workload: Workload) -> tuple[str, ...]:
    """The dataset blocks a search evaluates on: exploration, and baseline when the workload has one."""
    return ("exploration",) + (("baseline",) if workload.spec.exploration.datasets.baseline is not None else ())


def prepare_evaluator(workload: Workload, device: torch.device | None = None,
                      datasets: tuple[str, ...] | None = None) -> Evaluator:
    """Load model, calibration and the named dataset blocks (default: :func:`search_datasets`) once; names are
    short (``exploration``, ``baseline``, ``reevaluate``) or dotted workload keys. The blocks share one memory
    budget, claimed in the order named."""
    device = device or workload_device(workload)
    problem = build_problem(workload, device)
    budget = data_budget(workload, device)
    samples = {name: load_block(workload, workload.dataset(name), workload.dataset_key(name), device, budget)
               for name in (search_datasets(workload) if datasets is None else datasets)}
    return Evaluator(problem, samples, device)


def cache_datasets(workload: Workload, datasets: tuple[str, ...]) -> None:
    """Write the data cache entries of the named blocks that lack one (here, before array tasks start, so that
    the tasks only read them)."""
    for name in datasets:
        load_block(workload, workload.dataset(name), workload.dataset_key(name), budget=MemoryBudget(0))

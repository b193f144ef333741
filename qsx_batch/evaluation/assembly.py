"""From a workload to what an evaluation needs: the device, the model with its weights, its problem (calibrated
when it quantizes) and the dataset blocks, each opened once per process: held in memory on the device within the
workload's memory budget, streamed beyond it (qsx_batch.data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..data import MemoryBudget, Source, open_block
from ..data.budget import memory_budget
from ..errors import UserError, write_failure
from ..models import build_model, load_weights
from ..models.attention import expose_attention
from ..models.layers import LayerInfo, profile_layers, target_layers
from ..problems import Problem, create_problem
from ..workload import DatasetSpec, Workload
from .calibration import apply_amax, calibrate, load_calibration, save_calibration
from .evaluator import Evaluator
from .metrics import accuracy_function


def workload_device(workload: Workload, override: str | None = None) -> torch.device:
    """The device a command runs on: ``override`` (``--device``), else ``problem.gpu_id`` (the reference tool's
    GPU index, -1 for the CPU), else ``exploration.device``; ``auto`` picks the GPU when one is visible."""
    gpu = workload.spec.problem.gpu_id
    if override is None and gpu is not None:
        if gpu == -1:
            return torch.device("cpu")
        if gpu >= torch.cuda.device_count():
            raise UserError(f"problem.gpu_id is {gpu}, but this machine has {torch.cuda.device_count()} visible "
                            "GPU(s); use -1 for the CPU or an index below the GPU count.")
        return torch.device("cuda", gpu)
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


CPU = torch.device("cpu")


def load_block(workload: Workload, spec: DatasetSpec, what: str, device: torch.device = CPU,
               budget: MemoryBudget | None = None, cached: bool = True) -> Source:
    """One dataset block of the workload (paths relative to the workload file) on ``device``, held in memory when
    it fits ``budget`` (default: the workload's), else streamed. A scored image-folder block is read from the data
    cache in the results folder (written first when missing); ``cached=False`` (training blocks) decodes instead."""
    root = workload.input_path(spec.path) if spec.path else None
    return open_block(spec, root, workload.spec.seed, what, device, budget or data_budget(workload, device),
                      workload.data_cache_folder() if cached else None)


def load_model(workload: Workload, device: torch.device) -> torch.nn.Module:
    """The network with its weights, in eval mode, on ``device``. Without ``model.weights`` its random weights
    come from the workload seed: every process (a resume, an array task) builds the same network."""
    mspec = workload.spec.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(workload.spec.seed)
        model = build_model(mspec.type, mspec.extra_args)
    if mspec.weights:
        load_weights(model, workload.input_path(mspec.weights), mspec.type)
    # Q, K, V and out projections as layers (and the two products, when targets); parameters and state dict kept
    expose_attention(model, "AttentionMatmul" in workload.spec.problem.layer_types)
    return model.eval().to(device)


def probe_batch(workload: Workload, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first exploration sample and its label, as batches of one (the model's input shape)."""
    probe = load_block(workload, workload.spec.exploration.datasets.exploration, "exploration.datasets.exploration",
                       device, MemoryBudget(0))
    inputs, labels = next(iter(probe.batches(0, 1)))
    return inputs[:1], labels[:1]


def profile_model(workload: Workload, device: torch.device) -> tuple[torch.nn.Module, list[LayerInfo]]:
    """The network and its target layers, profiled with one exploration sample (input shapes, MACs)."""
    spec = workload.spec
    model = load_model(workload, device)
    modules = target_layers(model, spec.problem.layer_types, spec.problem.skip_layers)
    inputs, _ = probe_batch(workload, device)
    _check_input_shape(workload, tuple(inputs.shape[1:]))
    return model, profile_layers(model, modules, inputs)


def _check_input_shape(workload: Workload, sample: tuple[int, ...]) -> None:
    """``exploration.energy_evaluation.input_shape`` (N, C, W, H, the reference tool's energy input) must be the
    shape of the exploration samples, or the DRAM table describes another input."""
    energy = workload.spec.exploration.energy_evaluation
    if energy is None or energy.input_shape is None:
        return
    _, channels, *sides = energy.input_shape
    if len(sample) != 3 or sample[0] != channels or sorted(sample[1:]) != sorted(sides):
        raise UserError(f"Workload {workload.path}: exploration.energy_evaluation.input_shape {energy.input_shape} "
                        f"does not fit the exploration samples of shape {list(sample)} (C, H, W); the DRAM table "
                        "would describe another input. Make the two agree.")


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of the network's actual weights and buffers (quantizer amax left out: calibration makes those)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith("_amax"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def calibration_fingerprint(workload: Workload, model: torch.nn.Module) -> dict:
    """What a calibration depends on: model, its actual weights, quantized layers, calibration data and method,
    seed."""
    spec = workload.spec
    return {
        "model": spec.model.model_dump(mode="json"),
        "weights_sha256": weights_digest(model),
        "calibration": spec.calibration.model_dump(mode="json", exclude={"file"}) if spec.calibration else None,
        "layers": spec.problem.model_dump(mode="json", exclude={"problem_function"}),
        "seed": spec.seed,
    }


def calibration_path(workload: Workload, model: torch.nn.Module) -> Path:
    """Where the workload's calibration of ``model`` is stored (default name carries a hash of its fingerprint)."""
    return _calibration_file(workload, calibration_fingerprint(workload, model))


def _calibration_file(workload: Workload, fingerprint: dict) -> Path:
    text = json.dumps(fingerprint, sort_keys=True)
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
    fingerprint = calibration_fingerprint(workload, problem.model)  # hashes every weight: once
    path = _calibration_file(workload, fingerprint)
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
        if write_failure(exc):
            raise  # a full disk and its like end the command with their own message (qsx_batch.cli)
        raise UserError(f"Cannot write calibration file {path}: {exc}.") from None
    apply_amax(problem.quantizers, amax, path, device)  # the calibrators may leave amax on another device
    return str(path), True


def build_problem(workload: Workload, device: torch.device, calibrate: bool = True) -> Problem:
    """Model + problem for the workload; a problem with quantizers is calibrated unless ``calibrate`` is false."""
    model, layers = profile_model(workload, device)
    problem = create_problem(workload.spec, model, layers)
    if calibrate and problem.needs_calibration:
        ensure_calibration(workload, problem, device)
    model.eval()
    return problem


def metric_names(workload: Workload, problem: Problem) -> list[str]:
    """The names of the metrics the workload's accuracy function returns (one exploration sample through the
    fp32 network tells how many): the function's name, indexed when it returns several."""
    metric = accuracy_function(workload.spec.model.accuracy_function)
    inputs, labels = probe_batch(workload, next(problem.model.parameters()).device)
    problem.configure(None)
    with torch.inference_mode():
        outputs = problem.model(inputs)
        try:
            count = len(metric.pairs(outputs, labels))
        except Exception as exc:  # the user's callable, on real outputs: say which and why
            raise UserError(f"model.accuracy_function '{metric.name}' fails on one exploration sample: "
                            f"{type(exc).__name__}: {exc}") from None
    return [metric.name] if count == 1 else [f"{metric.name}[{i}]" for i in range(count)]


def search_datasets(workload: Workload) -> tuple[str, ...]:
    """The dataset blocks a search evaluates on: exploration, and baseline when the workload has one."""
    return ("exploration",) + (("baseline",) if workload.spec.exploration.datasets.baseline is not None else ())


def set_gpu_math(choice: str) -> None:
    """Set torch's TF32 switches for cuDNN and matmuls for an ``exploration.gpu_math`` choice (TF32 for tf32 and
    integer, IEEE fp32 for strict; they only act on a GPU)."""
    tf32 = choice in ("tf32", "integer")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def use_gpu_math(workload: Workload) -> None:
    """:func:`set_gpu_math` from the workload's ``exploration.gpu_math``."""
    set_gpu_math(workload.spec.exploration.gpu_math)


def prepare_evaluator(workload: Workload, device: torch.device | None = None,
                      datasets: tuple[str, ...] | None = None) -> Evaluator:
    """Load model, calibration and the named dataset blocks (default: :func:`search_datasets`) once; names are
    short (``exploration``, ``baseline``, ``reevaluate``) or dotted workload keys. The blocks share one memory
    budget, claimed in the order named."""
    device = device or workload_device(workload)
    use_gpu_math(workload)
    problem = build_problem(workload, device)
    if workload.spec.exploration.gpu_math == "integer":
        problem.evaluate_on_integer_grid()
    budget = data_budget(workload, device)
    samples = {name: load_block(workload, workload.dataset(name), workload.dataset_key(name), device, budget)
               for name in (search_datasets(workload) if datasets is None else datasets)}
    return Evaluator(problem, samples, device, accuracy_function(workload.spec.model.accuracy_function))


def cache_datasets(workload: Workload, datasets: tuple[str, ...]) -> None:
    """Write the data cache entries of the named blocks that lack one (here, before array tasks start, so that
    the tasks only read them)."""
    for name in datasets:
        load_block(workload, workload.dataset(name), workload.dataset_key(name), budget=MemoryBudget(0))

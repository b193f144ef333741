"""What a deployment flow needs of one stored individual (``qsx-batch export``).

For each individual, three files named ``individual-<row>``:

- ``.recipe.json``: per quantizer its layer, role, bit width, axis and calibrated amax (per channel or tensor),
  per layer its sparsity threshold and tile; the individual's stored scores; the workload hash and versions.
- ``.pt``: the fake-quantized model as fp32 weights, quantizer amax, the genome and the workload it belongs to;
  :func:`load_exported` rebuilds it in PyTorch with the individual's settings, scoring as the search scored it.
- ``.onnx``: only where ONNX can express the individual: every quantizer at 8 or 4 bits (opset 13 when all are
  8 bits, else opset 21, whose QuantizeLinear/DequantizeLinear take int4), one Q/DQ pair per quantizer, and no
  sparsity threshold above 0. Other individuals get a message saying why.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..evaluation.assembly import build_problem, probe_batch
from ..evaluation.calibration import apply_amax
from ..models import build_model, save_file
from ..models.attention import ProjectedAttention, expose_attention
from ..models.layers import LayerInfo
from ..models.quantized import quant_nn, split_quantizer_state
from ..problems import Problem, create_problem
from ..results import Run
from ..versions import package_versions
from ..workload import Workload, parse_workload
from .followup import FollowUp

FORMAT = "qsx-batch-export/1"


def recipe(run: Run, row: int, workload: Workload, problem: Problem, input_shape: tuple[int, ...]) -> dict:
    """The deployment recipe of individual ``row``: its settings, stored scores, and where it comes from."""
    ind = run.individuals
    genome = np.asarray(ind["genome"][row], dtype=float)
    return {
        "format": FORMAT, "individual": int(row), "generation": int(ind["generation"][row]),
        "results_file": str(run.path), "problem": problem.name, "gene_names": list(problem.gene_names),
        "genome": genome.tolist(), "params": np.asarray(ind["params"][row], dtype=float).tolist(),
        "accuracy": float(ind["accuracy"][row]), "samples": int(ind["samples"][row]),
        "cost": float(ind["cost"][row]), "cost_name": problem.cost_name, "cost_unit": problem.cost_unit,
        "input_shape": list(input_shape),
        "workload": {"name": workload.name, "sha256": workload.sha256, "path": str(workload.path)},
        "versions": package_versions(),
        **problem.settings(genome),
    }


ONNX_WIDTHS = {8: 13, 4: 21}  # bits -> the lowest opset whose QuantizeLinear takes that integer type
ATTENTION_OPSET = 14  # the first that expresses scaled_dot_product_attention


def onnx_refusal(settings: dict) -> str:
    """Why ONNX cannot express these settings ('' when it can)."""
    if any(layer["threshold"] > 0 for layer in settings.get("sparsity", [])):
        return "ONNX has no operator that zeroes the tiles of a layer input below a threshold"
    widths = sorted({q["bits"] for q in settings.get("quantizers", [])})
    if any(bits not in ONNX_WIDTHS for bits in widths):
        return (f"its bit widths {widths} are not all 8 or 4: ONNX QuantizeLinear/DequantizeLinear hold int8 and "
                "(opset 21) int4 integers")
    return ""


def quantizer_call_order(problem: Problem, sample: torch.Tensor) -> list[str]:
    """The enabled quantizers' names in the order a forward pass runs them: the order of the exported Q/DQ pairs.
    A quantizer that quantizes the very tensor an earlier one did, with the same amax and bits (an attention's
    Q, K and V inputs), is left out: the exporter merges their identical pairs into one."""
    order: list[str] = []
    earlier: list[tuple[torch.Tensor, nn.Module]] = []

    def seen(q: nn.Module, x: torch.Tensor) -> bool:
        return any(x is y and p._num_bits == q._num_bits and torch.equal(p._amax, q._amax) for y, p in earlier)

    def record(q, inputs, name):
        if not seen(q, inputs[0]):
            order.append(name)
        earlier.append((inputs[0], q))

    handles = [q.register_forward_pre_hook(lambda q, inputs, name=name: record(q, inputs, name))
               for name, q in problem.quantizers if q._disabled is False]
    try:
        with torch.inference_mode():
            problem.model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return order


def write_onnx(problem: Problem, sample: torch.Tensor, path: Path, settings: dict) -> None:
    """Export the configured model with a QuantizeLinear/DequantizeLinear pair per enabled quantizer. 4-bit
    quantizers are exported as 8-bit ones, then their pairs get int4 zero points and scales ``amax / 7`` at
    opset 21. A model with attention needs opset 14 at least."""
    import onnx

    model = problem.model.cpu().eval()
    attention = any(isinstance(m, ProjectedAttention) for m in model.modules())
    opset = max(ONNX_WIDTHS[8], ATTENTION_OPSET if attention else 0)
    bits = {q["name"]: q["bits"] for q in settings["quantizers"]}
    narrow = {name: q for name, q in problem.quantizers if bits[name] == 4}
    order = quantizer_call_order(problem, sample.cpu())
    previous = quant_nn.TensorQuantizer.use_fb_fake_quant
    quant_nn.TensorQuantizer.use_fb_fake_quant = True  # torch's fake-quantize ops, which export as Q/DQ
    for q in narrow.values():
        q._num_bits = 8  # torch's exporter writes int8 only; the pairs are narrowed below
    try:
        with warnings.catch_warnings():  # the tracer notes that amax becomes a constant: intended here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (sample.cpu(),), str(path), opset_version=opset, dynamo=False,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    finally:
        quant_nn.TensorQuantizer.use_fb_fake_quant = previous
        for q in narrow.values():
            q._num_bits = 4
    if narrow:
        # opset 21 for int4, through onnx's converter: later opsets changed other operators too (ReduceMean)
        graph = onnx.version_converter.convert_version(onnx.load(str(path)), ONNX_WIDTHS[4])
        narrow_to_int4(graph, order, {name: q._amax.detach().cpu().flatten().numpy() for name, q in narrow.items()})
        onnx.save(graph, str(path))


def narrow_to_int4(model, order: list[str], amax: dict[str, np.ndarray]) -> None:
    """Give the Q/DQ pairs of the quantizers in ``amax`` (named by ``order``, the pairs' order in the graph) of an
    opset-21 model int4 zero points and scales ``amax / 7``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    quantize = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    if len(quantize) != len(order):
        raise RuntimeError(f"the ONNX graph has {len(quantize)} QuantizeLinear nodes for {len(order)} quantizers")
    consumers = {name: node for node in graph.node for name in node.input}
    constants = {out: node for node in graph.node if node.op_type == "Constant" for out in node.output}
    initializers = {init.name: init for init in graph.initializer}

    def dims(name: str) -> list[int]:
        tensor = initializers[name] if name in initializers else constants[name].attribute[0].t
        return list(tensor.dims)

    def replace(name: str, tensor) -> None:
        if name in initializers:
            initializers[name].CopyFrom(tensor)
        else:
            node = constants[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", tensor))

    for node, quantizer in zip(quantize, order):
        if quantizer not in amax:
            continue
        scale = (amax[quantizer] / 7.0).astype(np.float32)
        for pair in (node, consumers[node.output[0]]):  # the QuantizeLinear and its DequantizeLinear
            shape = dims(pair.input[1])
            replace(pair.input[1], numpy_helper.from_array(scale.reshape(shape), pair.input[1]))
            replace(pair.input[2], helper.make_tensor(pair.input[2], TensorProto.INT4, shape, [0] * scale.size))
    del graph.value_info[:]  # the converter's inferred types say int8 where the pairs now hold int4
    model.ir_version = max(model.ir_version, 10)
    onnx.checker.check_model(model)


def export_individual(run: Run, row: int, workload: Workload, problem: Problem, sample: torch.Tensor,
                      out: Path) -> tuple[list[Path], str]:
    """Write the recipe, the PyTorch bundle and (where possible) the ONNX model of individual ``row``, using a
    freshly built, calibrated, not yet configured ``problem``; returns the files and why ONNX was left out."""
    genome = np.asarray(run.individuals["genome"][row], dtype=float)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"individual-{row}"
    weights, _ = split_quantizer_state(problem.model)
    amax = {name: q._amax.detach().cpu() for name, q in problem.quantizers} if problem.needs_calibration else {}
    settings = recipe(run, row, workload, problem, tuple(sample.shape[1:]))
    Path(f"{stem}.recipe.json").write_text(json.dumps(settings, indent=1))
    save_file({"format": FORMAT, "recipe_json": json.dumps(settings), "workload_yaml": workload.text,
               "workload_path": str(workload.path), "layers": [asdict(layer) for layer in problem.layers],
               "genome": torch.as_tensor(genome), "state_dict": weights, "amax": amax}, Path(f"{stem}.pt"))
    files = [Path(f"{stem}.recipe.json"), Path(f"{stem}.pt")]
    refusal = onnx_refusal(settings)
    if not refusal:
        problem.configure_trainable(genome)
        write_onnx(problem, sample, Path(f"{stem}.onnx"), settings)
        files.append(Path(f"{stem}.onnx"))
    return files, refusal


def export_chosen(job: FollowUp, out: Path) -> Iterator[tuple[int, list[Path], str]]:
    """Export every chosen individual into ``out``, each from a freshly built problem (each export configures its
    own model); yields the row, its files and why ONNX was left out."""
    sample, _ = probe_batch(job.workload, torch.device("cpu"))
    for row in job.rows:
        problem = build_problem(job.workload, torch.device("cpu"))
        job.check_problem(problem)
        yield (int(row), *export_individual(job.run, int(row), job.workload, problem, sample, out))


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of an exported individual (``individual-<row>.pt``), rebuilt with its settings: fp32 weights
    fake-quantized on every forward pass by its quantizers, and its sparsity thresholds; scores as the search
    scored it. The model's type must be importable here (built-in, torchvision, or the workload's callable)."""
    device = torch.device(device)
    bundle = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ValueError(f"{path} is not a model exported by 'qsx-batch export' ({FORMAT})")
    workload = parse_workload(bundle["workload_yaml"], Path(bundle["workload_path"]))
    spec = workload.spec
    model = build_model(spec.model.type, spec.model.extra_args)
    model.load_state_dict(bundle["state_dict"])
    expose_attention(model, "AttentionMatmul" in spec.problem.layer_types)
    layers = [LayerInfo(**{**layer, "input_shape": tuple(layer["input_shape"])}) for layer in bundle["layers"]]
    problem = create_problem(spec, model.eval().to(device), layers)
    if problem.needs_calibration:
        apply_amax(problem.quantizers, bundle["amax"], Path(path), device)
    problem.configure_trainable(bundle["genome"].numpy())
    return problem.model.eval()

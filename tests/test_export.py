"""``qsx-batch export``: the recipe, the PyTorch reload (stored accuracy exactly) and 8-bit ONNX run through
onnxruntime (stored accuracy within 0.5 points, one Q/DQ pair per quantizer)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.evaluation.assembly import load_block
from qsx_batch.tools.deployment import load_exported

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)


def _run(tmp_path, workload_path, predefined: list[float], name: str):
    data = yaml.safe_load(workload_path.read_text())
    data["workload"]["exploration"]["predefined_parameters"] = predefined
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / f"{name}.h5"
    assert main(["explore", str(path), "--output", str(out), "--skip-baseline"]) == 0
    run = results.open(out)
    return run, load_block(run.workload, run.workload.dataset("exploration"), "exploration")


def _batches(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs (normalized as the search feeds them) and labels of a block."""
    pairs = list(samples.batches())
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def _accuracy(model: torch.nn.Module, samples) -> float:
    inputs, labels = _batches(samples)
    with torch.inference_mode():
        return float((model(inputs).argmax(1) == labels).double().mean())


def test_all_8_bit_individual_exports_to_onnx_and_pytorch(quant_workload, tmp_path, capsys):
    run, samples = _run(tmp_path, quant_workload, [8], "q")
    params = run.individuals["params"]
    eight = int(np.flatnonzero((params == 8).all(axis=1))[0])  # the predefined individual
    other = int(np.flatnonzero(~(params == 8).all(axis=1))[0])
    out = tmp_path / "export"
    assert main(["export", str(run.path), "--index", str(eight), str(other), "--out", str(out)]) == 0
    assert "no ONNX" in capsys.readouterr().out
    stored = float(run.individuals["accuracy"][eight])

    recipe = json.loads((out / f"individual-{eight}.recipe.json").read_text())
    assert recipe["workload"]["sha256"] == run.header.workload_sha256 and recipe["accuracy"] == stored
    quantizers = recipe["quantizers"]
    assert [q["name"] for q in quantizers] == run.gene_names and {q["bits"] for q in quantizers} == {8}
    conv1_weight = next(q for q in quantizers if q["name"] == "conv1.weight")
    assert conv1_weight["axis"] == 0 and len(conv1_weight["amax"]) == 6  # per output channel of LeNet's conv1
    assert isinstance(next(q for q in quantizers if q["name"] == "conv1.input")["amax"], float)

    assert _accuracy(load_exported(out / f"individual-{eight}.pt"), samples) == stored
    assert _accuracy(load_exported(out / f"individual-{other}.pt"), samples) == run.individuals["accuracy"][other]

    graph = onnx.load(out / f"individual-{eight}.onnx").graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == len(quantizers)
    session = onnxruntime.InferenceSession(str(out / f"individual-{eight}.onnx"))
    inputs, labels = _batches(samples)
    logits = session.run(None, {"input": inputs.numpy()})[0]
    assert float((logits.argmax(1) == labels.numpy()).mean()) == pytest.approx(stored, abs=0.005 + 1e-9)
    assert not (out / f"individual-{other}.onnx").exists()


def test_sparsity_individual_exports_its_thresholds(sparsity_workload, tmp_path):
    run, samples = _run(tmp_path, sparsity_workload, [], "s")
    row = int(np.argmax(run.individuals["cost"]))  # the most zero tiles: thresholds above 0
    out = tmp_path / "export"
    assert main(["export", str(run.path), "--index", str(row), "--out", str(out)]) == 0
    recipe = json.loads((out / f"individual-{row}.recipe.json").read_text())
    thresholds = [layer["threshold"] for layer in recipe["sparsity"]]
    assert thresholds == pytest.approx(list(run.individuals["params"][row])) and max(thresholds) > 0
    assert {layer["block_width"] for layer in recipe["sparsity"]} == {4}
    assert _accuracy(load_exported(out / f"individual-{row}.pt"), samples) == run.individuals["accuracy"][row]
    assert not (out / f"individual-{row}.onnx").exists()


def test_4_bit_individual_exports_int4_at_opset_21(quant_workload, tmp_path):
    run, samples = _run(tmp_path, quant_workload, [4], "q4")
    four = int(np.flatnonzero((run.individuals["params"] == 4).all(axis=1))[0])
    out = tmp_path / "export"
    assert main(["export", str(run.path), "--index", str(four), "--out", str(out)]) == 0
    model = onnx.load(out / f"individual-{four}.onnx")
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21}
    zero_points = {init.name: init.data_type for init in model.graph.initializer}
    zero_points.update({node.output[0]: node.attribute[0].t.data_type for node in model.graph.node
                        if node.op_type == "Constant"})
    pairs = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    assert len(pairs) == len(run.gene_names)
    assert {zero_points[node.input[2]] for node in pairs} == {onnx.TensorProto.INT4}
    options = onnxruntime.SessionOptions()  # onnxruntime's extended optimizations move int4 pairs across MaxPool,
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC  # which rejects int4
    inputs, labels = _batches(samples)
    logits = onnxruntime.InferenceSession(str(out / f"individual-{four}.onnx"), options).run(
        None, {"input": inputs.numpy()})[0]
    stored = float(run.individuals["accuracy"][four])
    assert float((logits.argmax(1) == labels.numpy()).mean()) == pytest.approx(stored, abs=0.005 + 1e-9)

"""Attention quantized like every other matmul: nn.MultiheadAttention's projections as layers (models/attention.py),
weights a model passes to F.linear itself (models/functional.py), torch's fused encoder path kept off; tiny ViTs on
real MNIST digits and torchvision's vit_b_16 and swin_t on generated JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from attention_models import tiny_vit
from conftest import tiny_workload_dict, write_workload
from imagefolder import write_imagefolder
from torch import nn

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.models import load_weights
from qsx_batch.models.attention import ProjectedAttention, expose_attention
from qsx_batch.problems.sparsity import tiles_per_sample
from qsx_batch.tools.deployment import load_exported
from qsx_batch.tools.validation import coverage
from qsx_batch.workload import load_workload

CPU = torch.device("cpu")
CAUSAL = nn.Transformer.generate_square_subsequent_mask(7)
X, MEMORY = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(1)), torch.randn(
    3, 5, 16, generator=torch.Generator().manual_seed(2))

PADDING = torch.arange(7).expand(3, 7) >= torch.tensor([[7], [5], [3]])

CASES = {
    "self-attention with weights": (lambda: nn.MultiheadAttention(16, 4, batch_first=True), (X, X, X), {}),
    "sequence first, boolean mask": (lambda: nn.MultiheadAttention(16, 4), (X.transpose(0, 1), MEMORY.transpose(
        0, 1), MEMORY.transpose(0, 1)), {"attn_mask": torch.rand(7, 5) > 0.8, "need_weights": False}),
    "per-head float mask, weights per head": (lambda: nn.MultiheadAttention(16, 4, batch_first=True),
                                              (X, MEMORY, MEMORY), {"attn_mask": torch.randn(12, 7, 5),
                                                                    "average_attn_weights": False}),
    "kdim, vdim, bias_kv, zero attention, padding": (
        lambda: nn.MultiheadAttention(16, 4, kdim=8, vdim=6, add_bias_kv=True, add_zero_attn=True, batch_first=True),
        (X, MEMORY[..., :8], MEMORY[..., :6]), {"key_padding_mask": torch.rand(3, 5) > 0.7}),
    "unbatched, no bias": (lambda: nn.MultiheadAttention(16, 4, bias=False), (X[0], X[0], X[0]), {}),
    "causal": (lambda: nn.MultiheadAttention(16, 4, batch_first=True), (X, X, X),
               {"attn_mask": CAUSAL, "is_causal": True, "need_weights": False}),
    "encoder (fused path, nested tensors)": (
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2), (X,),
        {"src_key_padding_mask": PADDING}),
    "decoder": (lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 4, 32, batch_first=True), 2),
                (X, MEMORY), {"tgt_mask": CAUSAL, "tgt_is_causal": True}),
}


@pytest.mark.quick
@pytest.mark.parametrize("case", CASES)
def test_exposed_attention_computes_what_torch_computes(case):
    make, args, kwargs = CASES[case]
    torch.manual_seed(0)
    plain = make().eval()
    exposed = make().eval()
    exposed.load_state_dict(plain.state_dict())
    assert expose_attention(exposed) >= 1
    assert list(exposed.state_dict()) == list(plain.state_dict())  # same parameters: weights files still load
    called = []
    for module in exposed.modules():
        if isinstance(module, ProjectedAttention):
            for layer in (module.in_proj_q, module.in_proj_k, module.in_proj_v, module.out_proj):
                layer.register_forward_hook(lambda *_: called.append(1))
    with torch.no_grad():
        want, got = plain(*args, **kwargs), exposed(*args, **kwargs)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    if "src_key_padding_mask" in kwargs:  # torch's nested tensors give 0 at padded tokens, its unfused path values
        want, got = (want[0][~PADDING],), (got[0][~PADDING],)
    for w, g in zip(want, got):
        assert (w is None and g is None) or torch.allclose(torch.nan_to_num(w), torch.nan_to_num(g), atol=2e-6)
    assert called  # the projections ran as layers, not inside a fused kernel


def vit_workload(tmp_path, kind: str, **nsga) -> dict:
    data = tiny_workload_dict("quantization", tmp_path, pop_size=4, offsprings=4, generations=1, **nsga)
    w = data["workload"]
    w["name"] = f"tiny_vit_{kind}"
    w["model"] = {"type": "attention_models:tiny_vit", "extra_args": {"kind": kind}}
    return data


@pytest.mark.quick
@pytest.mark.parametrize("kind", ["mha", "encoder", "functional"])
def test_every_projection_of_a_tiny_vit_gets_genes_and_fp32_is_plain_inference(tmp_path, kind):
    workload = load_workload(write_workload(tmp_path, vit_workload(tmp_path, kind)))
    evaluator = prepare_evaluator(workload, CPU, ("exploration",))
    problem = evaluator.problem
    names = problem.gene_names
    projections = ["in_proj_q", "in_proj_k", "in_proj_v", "out_proj"] if kind != "functional" else ["qkv", "proj"]
    attentions = [f"blocks.layers.{i}.self_attn" if kind == "encoder" else f"blocks.{i}.attention" for i in (0, 1)]
    for attention in attentions:
        genes = [n for n in names if n.startswith(attention + ".")]
        assert genes == [f"{attention}.{p}.{role}" for p in projections for role in ("input", "weight")]
    assert not coverage(problem).uncovered or all(u.kind == "TinyViT" for u in coverage(problem).uncovered)

    torch.manual_seed(workload.spec.seed)
    plain = tiny_vit(kind).eval()  # the same seeded random weights, never exposed nor quantized
    inputs, _ = next(iter(evaluator.samples["exploration"].batches()))
    problem.configure(None)
    with torch.no_grad():
        # torch's fused kernels (MultiheadAttention's, the encoder layer's) differ in the last bits
        assert torch.allclose(problem.model(inputs), plain(inputs), atol=1e-5)
        assert torch.equal(problem.model(inputs).argmax(1), plain(inputs).argmax(1))
        low = np.full(len(names), 8.0)
        low[[i for i, n in enumerate(names) if ".attention." in n or ".self_attn." in n]] = 2.0
        problem.configure(low)
        assert not torch.allclose(problem.model(inputs), plain(inputs), atol=1e-2)  # 2-bit attention tells


@pytest.fixture(scope="module")
def trained_vit(tmp_path_factory) -> dict:
    """A tiny ViT (nn.MultiheadAttention) trained 3 epochs on the embedded digits by ``qsx-batch train``."""
    folder = tmp_path_factory.mktemp("vit")
    data = vit_workload(folder, "mha")
    train = yaml.safe_load(write_workload(folder, tiny_workload_dict("quantization", folder)).read_text())
    data["workload"]["training"] = {**train["workload"]["training"], "epochs": 3, "learning_rate": 0.003}
    data["workload"]["model"]["weights"] = str(folder / "vit.pt")
    assert main(["train", str(write_workload(folder, data, "train.yaml"))]) == 0
    return data


def test_a_trained_tiny_vit_explores_end_to_end_and_2_bit_attention_costs_accuracy(tmp_path, trained_vit):
    data = {"workload": {**trained_vit["workload"], "results": str(tmp_path / "results")}}
    path = write_workload(tmp_path, data)
    assert main(["explore", str(path)]) == 0
    run = results.open(next((tmp_path / "results").glob("*.h5")))
    assert any(".attention.in_proj_q." in n for n in run.gene_names)
    baseline = dict(zip(zip(run.baseline["label"], run.baseline["dataset"]), run.baseline["accuracy"]))
    assert baseline["fp32", "baseline"] > 0.5  # it learned the digits

    evaluator = prepare_evaluator(load_workload(path), CPU, ("exploration",))
    names = evaluator.problem.gene_names
    eight = np.full(len(names), 8.0)
    two = eight.copy()
    two[[i for i, n in enumerate(names) if ".attention." in n and n.endswith(".weight")]] = 2.0
    fp32, at_8, at_2 = (evaluator.evaluate(genome).accuracy for genome in (None, eight, two))
    assert abs(at_8 - fp32) < 0.05 and at_2 < at_8 - 0.05

    # the (full) sensitivity sweep varies every attention gene alone
    data["workload"]["exploration"] = {**data["workload"]["exploration"], "sensitivity": {"sweep": "full"}}
    sweep_file = tmp_path / "sweep.h5"
    assert main(["sensitivity", str(write_workload(tmp_path, data, "full_sweep.yaml")), "-o", str(sweep_file)]) == 0
    sweep = results.open(sweep_file)
    assert sweep.table("sensitivity").rows == 1 + len(names) * 6  # the neutral genome, then 2 to 7 bits per gene
    curves = sweep.sensitivity()
    attention = [i for i, n in enumerate(names) if ".attention." in n]
    assert min(curves.curve(i)[1][0] for i in attention) < curves.reference_accuracy - 0.02

    # retraining fine-tunes through the projections' quantizers into torch's in_proj_weight
    ok = np.flatnonzero(run.individuals["status"] == "ok")
    worst = int(ok[np.argmin(run.individuals["accuracy"][ok])])
    assert main(["retrain", str(run.path), "--index", str(worst), "--epochs", "1"]) == 0
    table = results.open(run.path).follow_ups["retraining"]
    assert list(table["epoch"]) == [0, 1] and table["accuracy"][1] > table["accuracy"][0]
    retrained, base = tiny_vit("mha"), tiny_vit("mha")
    load_weights(retrained, Path(str(table["weights"][1])), "attention_models:tiny_vit")  # a plain model loads it
    load_weights(base, Path(trained_vit["workload"]["model"]["weights"]), "attention_models:tiny_vit")
    assert not torch.equal(retrained.blocks[0].attention.in_proj_weight, base.blocks[0].attention.in_proj_weight)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_torchvision_transformers_explore_with_genes_on_every_attention(tmp_path, name):
    write_imagefolder(tmp_path / "images", classes=2, per_class=2)
    block = {"type": "imagenet", "kind": "imagefolder", "path": "images", "image_size": 224, "batch_size": 4}
    data = {"workload": {
        "name": name, "results": str(tmp_path / "results"),
        "problem": {"problem_function": "quantization_problem"},
        "model": {"type": name},
        "calibration": {"datasets": {"calibrate": block}},
        "exploration": {"nsga": {"pop_size": 2, "offsprings": 2, "generations": 1}, "device": "cpu",
                        "initial_population": "random",  # no sweep over some 150 genes of a 224 px network
                        "datasets": {"exploration": block, "baseline": block}}}}
    assert main(["explore", str(write_workload(tmp_path, data))]) == 0
    run = results.open(next((tmp_path / "results").glob("*.h5")))
    model = torchvision.models.get_model(name, weights=None)
    attentions = [n for n, m in model.named_modules()
                  if isinstance(m, nn.MultiheadAttention) or type(m).__name__ == "ShiftedWindowAttention"]
    assert len(attentions) == 12
    for attention in attentions:
        assert sum(g.startswith(attention + ".") for g in run.gene_names) >= 4, attention
    assert len(run.individuals["genome"]) >= 2


def sequences(split: str, **block) -> dict:
    return {"type": "attention_models:counting_sequences", "split": split, "batch_size": 32, **block}


def test_a_small_causal_language_model_trains_and_explores_with_quantized_attention(tmp_path):
    data = {"workload": {
        "name": "causal_lm", "results": str(tmp_path / "results"),
        "problem": {"problem_function": "quantization_problem"},
        "model": {"type": "attention_models:causal_lm", "weights": "lm.pt",
                  "accuracy_function": "attention_models:token_accuracy"},
        "calibration": {"datasets": {"calibrate": sequences("calibrate")}},
        "exploration": {"nsga": {"pop_size": 4, "offsprings": 4, "generations": 1}, "device": "cpu",
                        "datasets": {"exploration": sequences("validation"), "baseline": sequences("test")}},
        "training": {"epochs": 6, "learning_rate": 0.01,
                     "datasets": {"train": sequences("train", count=1024), "validation": sequences("validation")}}}}
    path = write_workload(tmp_path, data)
    assert main(["train", str(path)]) == 0  # next-token cross-entropy over (N, L, vocabulary) outputs
    assert main(["explore", str(path)]) == 0
    run = results.open(next((tmp_path / "results").glob("*.h5")))
    baseline = dict(zip(zip(run.baseline["label"], run.baseline["dataset"]), run.baseline["accuracy"]))
    assert baseline["fp32", "baseline"] > 0.8  # it learned to count
    for block in (0, 1):
        assert [g for g in run.gene_names if g.startswith(f"blocks.{block}.attention.")] == [
            f"blocks.{block}.attention.{p}.{role}" for p in ("in_proj_q", "in_proj_k", "in_proj_v", "out_proj")
            for role in ("input", "weight")]
    evaluator = prepare_evaluator(load_workload(path), CPU, ("exploration",))
    names = evaluator.problem.gene_names
    two = np.full(len(names), 8.0)
    two[[i for i, n in enumerate(names) if ".attention." in n]] = 2.0
    assert evaluator.evaluate(two).accuracy < baseline["fp32", "exploration"] - 0.1


@pytest.mark.quick
def test_sparsity_thresholds_reach_layers_used_through_f_linear(tmp_path):
    data = vit_workload(tmp_path, "functional")
    w = data["workload"]
    w["problem"]["problem_function"] = "sparsity_problem"
    w["exploration"]["extra_args"] = {"block_size": 4, "discrete_threshold_steps": 5, "threshold_limit": 2.0}
    w.pop("calibration", None)
    evaluator = prepare_evaluator(load_workload(write_workload(tmp_path, data)), CPU, ("exploration",))
    problem = evaluator.problem
    functional = [i for i, layer in enumerate(problem.layers) if layer.functional]
    assert [problem.layers[i].name for i in functional] == [f"blocks.{b}.attention.{p}" for b in (0, 1)
                                                            for p in ("qkv", "proj")]
    result = evaluator.evaluate(np.full(len(problem.gene_names), 4.0))  # the highest threshold everywhere
    assert all(result.blocks_created[i] > 0 for i in functional)
    # tokens x features tiles of 4 x 4: the profiled input shapes count what the hooks saw, layer by layer
    assert problem.layers[1].input_shape == (50, 32)  # 49 patches and the class token
    assert list(result.blocks_total) == [result.samples * tiles_per_sample(layer.input_shape, (4, 4),
                                                                           layer.kind == "Linear")
                                         for layer in problem.layers]
    assert result.blocks_total[1] == result.samples * 13 * 8


@pytest.mark.quick
@pytest.mark.parametrize("bits", [8, 4])
def test_a_tiny_vit_with_quantized_attention_exports_to_pytorch_and_onnx(tmp_path, bits):
    import onnx

    data = vit_workload(tmp_path, "mha")
    data["workload"]["exploration"]["predefined_parameters"] = [bits]
    path = write_workload(tmp_path, data)
    out = tmp_path / "run.h5"
    assert main(["explore", str(path), "--output", str(out), "--skip-baseline"]) == 0
    run = results.open(out)
    eight = int(np.flatnonzero((run.individuals["params"] == bits).all(axis=1))[0])
    assert main(["export", str(out), "--index", str(eight), "--out", str(tmp_path / "export")]) == 0
    model = load_exported(tmp_path / "export" / f"individual-{eight}.pt")
    evaluator = prepare_evaluator(load_workload(path), CPU, ("exploration",))
    pairs = list(evaluator.samples["exploration"].batches())
    with torch.inference_mode():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in pairs)
    assert correct / sum(len(y) for _, y in pairs) == run.individuals["accuracy"][eight]
    ops = [node.op_type for node in onnx.load(tmp_path / "export" / f"individual-{eight}.onnx").graph.node]
    # a pair per quantizer, but Q, K and V quantize the same tensor with the same amax: one pair for the three
    assert ops.count("QuantizeLinear") == len(run.gene_names) - 2 * 2


@pytest.mark.quick
def test_attention_matmuls_are_genes_when_asked_for_and_count_in_the_cost(tmp_path):
    data = vit_workload(tmp_path, "mha")
    data["workload"]["problem"]["layer_types"] = ["Conv2d", "Linear", "AttentionMatmul"]
    data["workload"]["exploration"]["extra_args"] = {"bit_weighting_function": "bitops"}
    workload = load_workload(write_workload(tmp_path, data))
    evaluator = prepare_evaluator(workload, CPU, ("exploration",))
    problem = evaluator.problem
    attention = "blocks.0.attention"
    assert [n for n in problem.gene_names if n.startswith(attention + ".")] == [
        f"{attention}.{p}.{role}" for p in ("in_proj_q", "in_proj_k", "in_proj_v", "q_times_k", "p_times_v",
                                            "out_proj") for role in ("input", "weight")]
    products = {layer.name: layer for layer in problem.layers if layer.kind == "AttentionMatmul"}
    assert len(products) == 4  # two per attention, two attentions
    # 4 heads of 50 tokens x 8 features: Q x K^T and softmax x V each 4 x 50 x 50 x 8 MACs per sample
    assert {(layer.params, layer.macs) for layer in products.values()} == {(0, 4 * 50 * 50 * 8)}

    torch.manual_seed(workload.spec.seed)
    plain = tiny_vit("mha").eval()
    inputs, _ = next(iter(evaluator.samples["exploration"].batches()))
    problem.configure(None)
    with torch.no_grad():
        assert torch.allclose(problem.model(inputs), plain(inputs), atol=1e-5)
    names = problem.gene_names
    eight = np.full(len(names), 8.0)
    two = eight.copy()
    two[[i for i, n in enumerate(names) if "_times_" in n]] = 2.0
    with torch.no_grad():
        problem.configure(eight)
        at_8 = problem.model(inputs)
        problem.configure(two)
        assert not torch.allclose(problem.model(inputs), at_8, atol=1e-2)
    saved = 4 * 4 * 50 * 50 * 8 * (8 * 8 - 2 * 2)  # the products' BitOps per sample, at 2 instead of 8 bits
    assert problem.cost(eight, np.zeros(0), 1) - problem.cost(two, np.zeros(0), 1) == saved

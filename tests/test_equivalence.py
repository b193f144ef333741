"""The fast evaluation path gives the same numbers as the straightforward path on the same inputs.

Quantization: weights fake-quantized once per individual (and the in-place fake quantizer) against
pytorch-quantization's own QuantConv2d/QuantLinear with both quantizers active on every batch.
Sparsity: the vectorized tiling hook against a plain loop over tiles. Memory: evaluating individuals one after
the other does not make the process hold more memory.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qsx_batch.data import Samples
from qsx_batch.evaluation.assembly import load_model, prepare_evaluator
from qsx_batch.evaluation.calibration import apply_amax
from qsx_batch.evaluation.evaluator import Evaluator
from qsx_batch.models.quantized import (
    InferenceTensorQuantizer,
    QuantDescriptor,
    quant_nn,
    quantize_layers,
    quantizers_of,
)
from qsx_batch.problems.sparsity import BlockSparsifier, tiles_per_sample
from qsx_batch.workload import load_workload

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)

CPU = torch.device("cpu")


def random_genomes(evaluator: Evaluator, count: int, seed: int = 0) -> list[np.ndarray]:
    lo, hi = evaluator.problem.bounds
    rng = np.random.default_rng(seed)
    return [rng.integers(lo.astype(int), hi.astype(int) + 1).astype(float) for _ in range(count)]


def logits(model: nn.Module, samples: Samples) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(inputs) for inputs, _ in samples.batches()])


def correct(scores: torch.Tensor, samples: Samples) -> int:
    return int((scores.argmax(1) == samples.labels).sum())


# -- quantization ------------------------------------------------------------------------------------------------
def library_model(workload_path: Path, evaluator: Evaluator) -> tuple[nn.Module, list]:
    """The straightforward path: a fresh model with pytorch-quantization's modules and the same calibrated amax."""
    problem = evaluator.problem
    model = load_model(load_workload(workload_path), CPU)
    quantizers = quantizers_of(list(zip(problem.layer_names, quantize_layers(model, problem.layer_names, "max"))))
    apply_amax(quantizers, {name: q._amax for name, q in problem.quantizers}, workload_path, CPU)
    return model, quantizers


def test_weights_quantized_once_give_the_library_result(quant_workload):
    evaluator = prepare_evaluator(load_workload(quant_workload), CPU, datasets=("exploration",))
    samples = evaluator.samples["exploration"]
    reference, quantizers = library_model(quant_workload, evaluator)
    assert all(type(q) is quant_nn.TensorQuantizer for _, q in quantizers)
    genomes = random_genomes(evaluator, 6) + [evaluator.problem.bounds[0], evaluator.problem.bounds[1]]
    scores = set()
    for genome in genomes:  # one after the other on the same model, as in a search
        result = evaluator.evaluate(genome)
        for (_, q), bits in zip(quantizers, genome):
            q._num_bits = int(bits)
            q.enable()
        expected = logits(reference, samples)
        assert torch.equal(logits(evaluator.problem.model, samples), expected)
        assert result.correct == correct(expected, samples)
        scores.add(result.correct)
    assert len(scores) > 2  # the genomes really differ
    fp32 = evaluator.evaluate(None)
    assert fp32.correct == correct(logits(load_model(load_workload(quant_workload), CPU), samples), samples)


@pytest.mark.parametrize("bits,narrow", [(2, True), (2, False), (4, True), (8, True), (8, False), (16, True)])
def test_inference_quantizer_matches_the_library_bit_for_bit(bits, narrow):
    torch.manual_seed(bits)
    weights = torch.randn(8, 3, 5, 5)
    weights[2] = 0.0  # a channel whose amax is zero
    amax = weights.abs().amax(dim=(1, 2, 3), keepdim=True)
    bound = 2.0 ** (bits - 1) - 1.0
    ties = torch.arange(-2 * bound - 6, 2 * bound + 7) / 2.0  # with amax = bound: halves, and beyond both bounds
    for x, a in ((weights, amax), (ties, torch.tensor(bound))):
        library, fast = quant_nn.TensorQuantizer(), quant_nn.TensorQuantizer()
        fast.__class__ = InferenceTensorQuantizer
        for q in (library, fast):
            q._num_bits, q._narrow_range = bits, narrow
            q.register_buffer("_amax", a.clone())
        with torch.no_grad():
            assert torch.equal(fast(x), library(x))


def test_inference_quantizer_keeps_the_library_gradient():
    quantizer = quant_nn.TensorQuantizer()
    quantizer.__class__ = InferenceTensorQuantizer
    quantizer.register_buffer("_amax", torch.tensor(1.0))
    x = torch.tensor([0.3, -0.7, 2.0], requires_grad=True)
    quantizer(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0]))  # straight-through estimator, clipped above amax


# -- sparsity ----------------------------------------------------------------------------------------------------
def reference_sparsify(x: torch.Tensor, block: tuple[int, int], threshold: float,
                       linear: bool = False) -> tuple[torch.Tensor, int, int, int]:
    """Plain tiling, one tile at a time: windows of ``block`` = (rows, columns) of each sample's channel for a
    feature map; of each (tokens, features) matrix of a Linear input with tokens (every leading dimension apart);
    runs of rows x columns features of each flattened sample otherwise; edge tiles are partial. Returns the
    sparsified input and the numbers of tiles, tiles already zero, and tiles the threshold newly zeroed."""
    out = x.clone()
    if linear and x.dim() >= 3:
        grid, (tile_h, tile_w) = out.reshape(-1, 1, x.shape[-2], x.shape[-1]), block
    elif x.dim() == 4 and not linear:
        grid, (tile_h, tile_w) = out, block
    else:
        grid, (tile_h, tile_w) = out.reshape(x.shape[0], 1, 1, -1), (1, block[0] * block[1])
    total = already = created = 0
    for n in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            for i in range(0, grid.shape[2], tile_h):
                for j in range(0, grid.shape[3], tile_w):
                    tile = grid[n, c, i:i + tile_h, j:j + tile_w]
                    magnitude = float(tile.abs().max())
                    total += 1
                    already += magnitude == 0.0
                    if magnitude < threshold:
                        created += magnitude != 0.0
                        tile.zero_()
    return out, total, already, created


@pytest.mark.parametrize("shape, linear", [
    ((2, 3, 8, 8), False), ((2, 3, 7, 10), False), ((3, 2, 2, 3), False), ((2, 3, 2, 9), False), ((3, 40), True),
    ((2, 16), True), ((3, 10), True), ((2, 4, 9), False),
    ((2, 9, 10), True), ((3, 2, 6), True), ((2, 5, 3, 9), True), ((4, 7, 8), True)])  # tokens x features
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.2])
@pytest.mark.parametrize("block", [(4, 4), (2, 5)])
def test_block_hook_matches_plain_tiling(shape, linear, threshold, block):
    torch.manual_seed(len(shape) * 100 + shape[-1])
    x = torch.randn(shape)
    x[0].view(-1)[: x[0].numel() // 2] = 0.0  # whole zero tiles in the first sample
    hook = BlockSparsifier(block, CPU, linear)
    hook.threshold = threshold
    returned = hook(None, (x,))
    out = x if returned is None else returned[0]
    expected, total, already, created = reference_sparsify(x, block, threshold, linear)
    assert total == x.shape[0] * tiles_per_sample(tuple(x.shape[1:]), block, linear)
    assert out.shape == x.shape and torch.equal(out, expected)
    assert (int(hook.total), int(hook.already)) == (total, already)
    assert int(hook.below) - min(int(hook.below), already) == created


def test_sparsity_evaluation_matches_plain_tiling(sparsity_workload):
    workload = load_workload(sparsity_workload)
    evaluator = prepare_evaluator(workload, CPU, datasets=("exploration",))
    problem, samples = evaluator.problem, evaluator.samples["exploration"]
    reference = load_model(workload, CPU)
    for genome in random_genomes(evaluator, 2, seed=1):
        result = evaluator.evaluate(genome)
        counts = np.zeros((len(problem.layers), 3), dtype=np.int64)

        def pre_hook(module, inputs, index, threshold, counts=counts):
            out, *numbers = reference_sparsify(inputs[0], problem.block_shape, threshold)
            counts[index] += numbers
            return (out,)

        handles = [reference.get_submodule(layer.name).register_forward_pre_hook(
            lambda m, i, k=k, t=t: pre_hook(m, i, k, t)) for k, (layer, t) in
            enumerate(zip(problem.layers, problem.decode(genome)))]
        expected = logits(reference, samples)
        for handle in handles:
            handle.remove()
        assert result.correct == correct(expected, samples)
        assert torch.equal(logits(problem.model, samples), expected)
        assert np.array_equal(result.blocks_total, counts[:, 0])
        assert np.array_equal(result.blocks_already, counts[:, 1])
        assert np.array_equal(result.blocks_created, counts[:, 2]) and counts[:, 2].sum() > 0


# -- memory ------------------------------------------------------------------------------------------------------
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_LIBC = ctypes.CDLL(None)
if hasattr(_LIBC, "mallinfo2"):
    _LIBC.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes the C allocator has handed out and not got back (torch CPU tensors included), from glibc."""
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.mark.skipif(not hasattr(_LIBC, "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)")
@pytest.mark.parametrize("problem", ["quant_workload", "sparsity_workload"])
def test_evaluations_do_not_grow_memory(problem, request):
    evaluator = prepare_evaluator(load_workload(request.getfixturevalue(problem)), CPU, datasets=("exploration",))
    peaks: list[int] = []  # bytes in use after every layer of every forward pass
    probes = [m.register_forward_hook(lambda *_: peaks.append(heap_in_use())) for m in evaluator.problem.model.modules()]
    genomes = random_genomes(evaluator, 24, seed=2)
    for genome in genomes[:4]:  # warm-up: allocator pools and first-call buffers
        evaluator.evaluate(genome)
    at_rest, peak_before = heap_in_use(), max(peaks)
    batch_bytes = evaluator.samples["exploration"].inputs[:500].nbytes
    for genome in genomes[4:]:
        peaks.clear()
        assert evaluator.evaluate(genome).ok
        assert max(peaks) <= peak_before + batch_bytes // 4
    for probe in probes:
        probe.remove()
    assert heap_in_use() - at_rest < 256 * 1024  # nothing is kept per individual


def test_a_weight_is_fake_quantized_once_per_setting_and_again_when_it_changes():
    quantizer = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=4, axis=(0,)))
    quantizer.__class__ = InferenceTensorQuantizer
    weight = nn.Parameter(torch.randn(4, 3))
    quantizer.register_buffer("_amax", weight.detach().abs().amax(dim=1, keepdim=True))
    library = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=4, axis=(0,)))

    def expected() -> torch.Tensor:
        library._num_bits = quantizer._num_bits
        library.register_buffer("_amax", quantizer._amax.clone())
        return library(weight.detach())

    with torch.inference_mode():
        first = quantizer(weight)
        assert quantizer(weight) is first and torch.equal(first, expected())  # kept for the next batch
        quantizer._num_bits = 2  # the next individual
        assert torch.equal(quantizer(weight), expected()) and not torch.equal(quantizer(weight), first)
    with torch.no_grad():
        weight.mul_(2.0)  # new weights in place (load_state_dict, retraining)
    quantizer.register_buffer("_amax", quantizer._amax * 2.0)  # and their calibration
    with torch.inference_mode():
        assert torch.equal(quantizer(weight), expected())
    with torch.no_grad():
        weight.add_(0.5)  # the weight alone
    with torch.inference_mode():
        assert torch.equal(quantizer(weight), expected())

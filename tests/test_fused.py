"""The fused kernels of a GPU evaluation, compiled here on the CPU (torch.compile's C++ backend; Triton on a GPU
compiles the same graphs): bit for bit pytorch-quantization's fake quantization and the eager sparsity hook, a
whole evaluation identical to the eager one, and one compilation for every batch size, bit width and threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.models import fused
from qsx_batch.models.quantized import FUSED_FAKE_QUANT, InferenceTensorQuantizer, fake_quant, quant_nn
from qsx_batch.problems.sparsity import FUSED_SPARSIFY, BlockSparsifier
from qsx_batch.workload import load_workload

CPU = torch.device("cpu")


@pytest.fixture
def fused_on_cpu(monkeypatch):
    """Calls on CPU tensors run compiled, as on a GPU."""
    monkeypatch.setattr(fused, "FUSED_DEVICES", {"cpu"})
    yield
    assert FUSED_FAKE_QUANT.failure is None and FUSED_SPARSIFY.failure is None  # really compiled, no fallback


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def library_quantizer(bits: int, narrow: bool, amax: torch.Tensor, fast: bool) -> quant_nn.TensorQuantizer:
    q = quant_nn.TensorQuantizer()
    if fast:
        q.__class__ = InferenceTensorQuantizer
    q._num_bits, q._narrow_range = bits, narrow
    q.register_buffer("_amax", amax.clone())
    return q


def test_fused_fake_quant_is_the_library_bit_for_bit_for_every_bit_width_and_shape(fused_on_cpu):
    torch.manual_seed(0)
    weights = torch.randn(8, 3, 5, 5)
    weights[2] = 0.0  # a channel whose amax is zero
    weight_amax = weights.abs().amax(dim=(1, 2, 3), keepdim=True)
    linear = torch.randn(6, 10)
    cases = [(weights, weight_amax), (linear, linear.abs().amax(1, keepdim=True))]
    cases += [(torch.randn(shape) * 3, torch.tensor(2.5)) for shape in ((4, 3, 9, 9), (7, 3, 9, 9), (5, 12), (2, 6, 7))]
    for bits in (2, 3, 4, 8, 16):
        for narrow in (True, False):
            bound = 2.0 ** (bits - 1) - 1.0
            ties = torch.arange(-2 * bound - 6, 2 * bound + 7) / 2.0  # with amax = bound: halves, beyond both bounds
            for x, amax in cases + [(ties, torch.tensor(bound))]:
                with torch.no_grad():
                    expected = library_quantizer(bits, narrow, amax, fast=False)(x)
                    assert torch.equal(library_quantizer(bits, narrow, amax, fast=True)(x), expected)
                    assert torch.equal(fake_quant(x, amax, bits, narrow), expected)
    warm = graphs()
    with torch.no_grad():  # new batch sizes and bit widths, ranks seen before: nothing compiles again
        for n, bits in ((33, 5), (130, 7), (3, 6)):
            x = torch.randn(n, 3, 11, 11)
            assert torch.equal(fake_quant(x, torch.tensor(1.5), bits, False),
                               library_quantizer(bits, False, torch.tensor(1.5), fast=False)(x))
    assert graphs() == warm


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.2])
def test_fused_sparsify_matches_the_eager_hook(fused_on_cpu, monkeypatch, threshold):
    shapes = [((2, 3, 8, 8), False), ((2, 3, 7, 10), False), ((3, 40), True), ((2, 5, 3, 9), True)]
    for block in ((4, 4), (2, 5)):
        for shape, linear in shapes:
            torch.manual_seed(shape[-1])
            x = torch.randn(shape)
            x[0].view(-1)[: x[0].numel() // 2] = 0.0  # whole zero tiles in the first sample
            hooks = {}
            for name, devices in (("eager", set()), ("fused", {"cpu"})):
                monkeypatch.setattr(fused, "FUSED_DEVICES", devices)
                hook = hooks[name] = BlockSparsifier(block, CPU, linear)
                hook.threshold = threshold
                for _ in range(2):  # counters add up over batches
                    returned = hook(None, (x,))
                    hook.out = x if returned is None else returned[0]
            assert torch.equal(hooks["fused"].out, hooks["eager"].out)
            assert torch.equal(hooks["fused"].counts[:2], hooks["eager"].counts[:2])
            if threshold > 0:
                assert torch.equal(hooks["fused"].counts, hooks["eager"].counts)


@pytest.mark.parametrize("problem", ["quant_workload", "sparsity_workload"])
def test_a_fused_evaluation_gives_the_eager_results(problem, request, monkeypatch):
    evaluator = prepare_evaluator(load_workload(request.getfixturevalue(problem)), CPU, datasets=("exploration",))
    lo, hi = evaluator.problem.bounds
    rng = np.random.default_rng(3)
    genomes = [None, lo, hi] + [rng.integers(lo.astype(int), hi.astype(int) + 1).astype(float) for _ in range(3)]
    eager = [evaluator.evaluate(g) for g in genomes]
    monkeypatch.setattr(fused, "FUSED_DEVICES", {"cpu"})
    for genome, expected in zip(genomes, eager):
        result = evaluator.evaluate(genome)
        assert result.ok and result.correct == expected.correct and result.cost == expected.cost
        assert np.array_equal(result.blocks_created, expected.blocks_created)
        assert np.array_equal(result.blocks_already, expected.blocks_already)
    assert len({(r.correct, r.cost) for r in eager}) > 2  # the genomes really differ
    assert FUSED_FAKE_QUANT.failure is None and FUSED_SPARSIFY.failure is None


def test_a_compiler_that_fails_falls_back_to_the_eager_numbers(monkeypatch):
    broken = fused.Fused(lambda x: x * 2)
    monkeypatch.setattr(fused, "FUSED_DEVICES", {"cpu"})
    monkeypatch.setattr(torch, "compile", lambda function, **_: lambda *a: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.warns(RuntimeWarning, match="runs unfused"):
        assert torch.equal(broken(torch.ones(3)), torch.full((3,), 2.0))
    assert broken.failure == "RuntimeError: no" and not broken.active(torch.ones(1))
    assert torch.equal(broken(torch.ones(2)), torch.full((2,), 2.0))  # eager from now on, no second warning

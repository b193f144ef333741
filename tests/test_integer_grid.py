"""exploration.gpu_math: integer on the CPU: quantized layers computed on the integer values of their inputs and
weights (exact sums), rescaled per channel, score what the fake-quantized path scores; fp32 afterwards is the plain
network again, and a problem that quantizes nothing is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_workload_dict, write_workload

from qsx_batch.cli import main
from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.models import fused
from qsx_batch.models.quantized import FUSED_GRID, IntegerGridLayer, fake_quant
from qsx_batch.workload import load_workload

CPU = torch.device("cpu")


@pytest.mark.parametrize("compiled", [False, True])
def test_grid_values_are_whole_numbers_that_divide_back_to_the_fake_quantized_values(compiled, monkeypatch):
    if compiled:
        monkeypatch.setattr(fused, "FUSED_DEVICES", {"cpu"})
    torch.manual_seed(1)
    weights = torch.randn(6, 3, 5, 5)
    weights[1] = 0.0  # a channel whose amax is zero
    amax = weights.abs().amax(dim=(1, 2, 3), keepdim=True)
    for x, a in ((weights, amax), (torch.randn(4, 3, 9, 9) * 2, torch.tensor(2.5))):
        for bits in (2, 4, 8):
            for narrow in (True, False):
                high = 2.0 ** (bits - 1) - 1
                grid = fake_quant(x, a, bits, narrow, grid=True)
                assert torch.equal(grid, grid.round()) and grid.max() <= high
                assert grid.min() >= (-high if narrow else -high - 1)
                scale = torch.where(a <= 2.0 ** -24, 1.0, torch.full_like(a, high) / a)  # (high / a: reciprocal)
                assert torch.equal(grid / scale, fake_quant(x, a, bits, narrow))
    if compiled:
        assert FUSED_GRID.failure is None


def _pair(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    fake = prepare_evaluator(load_workload(write_workload(tmp_path, data, "fake.yaml")), CPU, ("exploration",))
    data["workload"]["exploration"]["gpu_math"] = "integer"
    grid = prepare_evaluator(load_workload(write_workload(tmp_path, data, "grid.yaml")), CPU, ("exploration",))
    return fake, grid


def test_lenet5_on_the_integer_grid_scores_what_the_fake_quantized_path_scores(tmp_path):
    fake, grid = _pair(tmp_path)
    layers = [g for g in grid.problem.grids if g is not None]
    assert len(layers) == 5  # every Conv2d and Linear of LeNet-5
    lo, hi = grid.problem.bounds
    rng = np.random.default_rng(0)
    genomes = [lo, hi] + [rng.integers(lo.astype(int), hi.astype(int) + 1).astype(float) for _ in range(6)]
    batch = next(iter(grid.samples["exploration"].batches()))[0][:64]
    for genome in genomes:
        a, b = fake.evaluate(genome), grid.evaluate(genome)
        assert b.ok and a.cost == b.cost
        assert abs(a.correct - b.correct) <= 1  # float rounding of the fake path, at most one near tie
        with torch.no_grad():
            fake.problem.configure(genome)
            grid.problem.configure(genome)
            expected, got = fake.problem.model(batch), grid.problem.model(batch)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert len({fake.evaluate(g).correct for g in genomes}) > 2  # the genomes really differ


def test_the_integer_sums_are_exact_and_fp32_is_the_plain_network_again(tmp_path):
    fake, grid = _pair(tmp_path)
    problem = grid.problem
    batch = next(iter(grid.samples["exploration"].batches()))[0][:32]
    with torch.no_grad():
        problem.configure(None)
        plain = problem.model(batch)
        first: IntegerGridLayer = problem.grids[0]
        sums = []
        first.module.register_forward_hook(lambda m, i, out: sums.append(out.clone()))  # before the grid's hook
        problem.configure(problem.bounds[1])  # all 8 bit
        problem.model(batch)
        assert torch.equal(sums[-1], sums[-1].round())  # whole numbers: every product and sum exact in fp32
        assert torch.equal(sums[-1].double(), torch.nn.functional.conv2d(
            first.module._input_quantizer(batch).double(), first.module.weight.double(), None,
            first.module.stride, first.module.padding))
        problem.configure(None)
        assert torch.equal(problem.model(batch), plain)
    assert all(g.module.bias is g.bias for g in problem.grids if g is not None)


def test_integer_math_on_a_problem_that_quantizes_nothing_is_one_clear_error(tmp_path, capsys):
    data = tiny_workload_dict("sparsity", tmp_path)
    data["workload"]["exploration"]["gpu_math"] = "integer"
    assert main(["explore", str(write_workload(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "exploration.gpu_math: integer" in err and "sparsity_problem quantizes nothing" in err
    assert "Traceback" not in err

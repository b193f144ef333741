"""Problems on real models: quantizer bits, cost functions, calibration, thresholds and block counting."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import WEIGHTS, tiny_workload_dict, write_workload

from qsx_batch.evaluation.assembly import build_problem, calibration_path, prepare_evaluator
from qsx_batch.problems.sparsity import BlockSparsifier, threshold_values
from qsx_batch.workload import ExtraArgs, load_workload

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)

CPU = torch.device("cpu")


def test_lenet_layer_profile_and_costs(quant_workload):
    problem = build_problem(load_workload(quant_workload), CPU)
    macs = {layer.name: layer.macs for layer in problem.layers}
    # conv1: 6 x 28 x 28 outputs x (1 x 5 x 5); conv2: 16 x 10 x 10 x (6 x 5 x 5); fc: in x out
    assert macs == {"conv1": 117600, "conv2": 240000, "fc1": 48000, "fc2": 10080, "fc3": 840}
    assert [layer.params for layer in problem.layers] == [150, 2400, 48000, 10080, 840]
    bits = np.array([8, 4, 6, 2, 3, 5, 7, 8, 2, 3], dtype=float)
    from qsx_batch.problems import costs

    ib, wb = bits[0::2], bits[1::2]
    assert costs.bits_weighted_linear(ib, wb, problem.layers) == 48
    assert costs.bits_weighted_per_layer(ib, wb, problem.layers) == pytest.approx(0.5 * 22 + 5.0 * 26)
    assert costs.model_size_bits(ib, wb, problem.layers) == 150 * 4 + 2400 * 2 + 48000 * 5 + 10080 * 8 + 840 * 3
    assert costs.bitops(ib, wb, problem.layers) == 117600 * 32 + 240000 * 12 + 48000 * 15 + 10080 * 56 + 840 * 6


def test_configure_sets_every_tensor_quantizer(quant_workload):
    problem = build_problem(load_workload(quant_workload), CPU)
    genome = np.arange(2, 12, dtype=float).clip(2, 8)
    problem.configure(genome)
    assert [q.num_bits for _, q in problem.quantizers] == list(genome.astype(int))
    assert all(q.amax is not None for _, q in problem.quantizers)
    problem.configure(None)
    assert all(q._disabled for _, q in problem.quantizers)
    assert torch.equal(problem.modules[0].weight, problem.fp32_weights[0])


def test_fewer_bits_cost_accuracy(quant_workload):
    evaluator = prepare_evaluator(load_workload(quant_workload), CPU)
    fp32 = evaluator.evaluate(None)
    eight = evaluator.evaluate(np.full(10, 8.0))
    two = evaluator.evaluate(np.full(10, 2.0))
    assert abs(eight.accuracy - fp32.accuracy) <= 0.01
    assert two.accuracy < eight.accuracy - 0.2
    assert eight.cost == 80 and two.cost == 20


def test_calibration_is_saved_reused_and_keeps_batchnorm(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["model"].update(type="resnet8", weights=None)
    data["workload"]["exploration"]["datasets"]["exploration"]["type"] = "cifarlike:make"
    data["workload"]["calibration"]["datasets"]["calibrate"]["type"] = "cifarlike:make"
    data["workload"]["calibration"]["method"] = "histogram"
    workload = load_workload(write_workload(tmp_path, data))
    problem = build_problem(workload, CPU, calibrate=False)
    bn = problem.model.bn1  # fresh statistics (0 and 1): calibration in train mode would move them
    before = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    from qsx_batch.evaluation.assembly import ensure_calibration

    path, computed = ensure_calibration(workload, problem, CPU)
    assert computed and calibration_path(workload, problem.model) == __import__("pathlib").Path(path)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    amax = {n: q.amax.clone() for n, q in problem.quantizers}
    assert amax["conv1.weight"].numel() == 16  # per output channel
    mtime = __import__("os").path.getmtime(path)
    again = build_problem(workload, CPU)
    assert __import__("os").path.getmtime(path) == mtime
    for name, q in again.quantizers:
        assert torch.equal(q.amax, amax[name])


@pytest.mark.parametrize("histogram_method", ["mse", "entropy", "percentile"])
def test_histogram_calibration_runs_without_a_gpu_and_leaves_amax_on_the_evaluation_device(tmp_path,
                                                                                          histogram_method):
    """pytorch-quantization's mse search calls ``.cuda()``; on a CPU-only machine it runs on the CPU."""
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["calibration"].update(method="histogram", histogram_method=histogram_method)
    problem = build_problem(load_workload(write_workload(tmp_path, data)), CPU)
    for name, q in problem.quantizers:
        assert q.amax.device == CPU and torch.isfinite(q.amax).all() and (q.amax > 0).all(), name
    inputs = dict(problem.quantizers)["conv2.input"].amax
    plain = build_problem(load_workload(write_workload(tmp_path, tiny_workload_dict("quantization", tmp_path),
                                                       "max.yaml")), CPU)
    assert not torch.equal(inputs, dict(plain.quantizers)["conv2.input"].amax)  # the histogram method decided


RANDOM_NETWORK = """
import sys
from qsx_batch.evaluation.assembly import CPU, build_problem, weights_digest
from qsx_batch.workload import load_workload
problem = build_problem(load_workload(sys.argv[1]), CPU, calibrate=False)
print(weights_digest(problem.model))
"""


def test_a_network_without_weights_is_the_same_in_every_process_and_its_calibration_knows_it(tmp_path):
    """``model.weights: null``: the random network comes from the workload seed, so a resume or an array task
    scores the network that was calibrated; another seed is another network, with its own calibration file."""
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["model"]["weights"] = None
    first = write_workload(tmp_path, data, "seed0.yaml")
    data["workload"]["seed"] = 1
    other = write_workload(tmp_path, data, "seed1.yaml")
    digests = [subprocess.run([sys.executable, "-c", RANDOM_NETWORK, str(path)], capture_output=True, text=True,
                              check=True, timeout=300).stdout.strip() for path in (first, first, other)]
    assert digests[0] == digests[1] != digests[2]


def test_new_weights_at_the_same_path_get_their_own_calibration(tmp_path):
    weights = tmp_path / "lenet.pt"
    shutil.copy(WEIGHTS, weights)
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["model"]["weights"] = str(weights)
    workload = load_workload(write_workload(tmp_path, data))
    before = calibration_path(workload, build_problem(workload, CPU, calibrate=False).model)
    state = torch.load(weights, weights_only=True)
    state["fc3.bias"] += 0.01  # retrained in place
    torch.save(state, weights)
    after = calibration_path(workload, build_problem(workload, CPU, calibrate=False).model)
    assert before != after and before.parent == after.parent


def test_threshold_discretization():
    lin = threshold_values(ExtraArgs(discrete_threshold_steps=5, threshold_limit=2.0))
    assert np.allclose(lin, [0, 0.5, 1.0, 1.5, 2.0])
    log = threshold_values(ExtraArgs(discrete_threshold_steps=4, threshold_limit=1.0, discrete_threshold_method="log"))
    assert np.allclose(log, [0, 1e-3, 3.1622776e-2, 1.0])
    assert threshold_values(ExtraArgs(discrete_threshold_method="continuous")) is None


def test_block_sparsifier_on_a_handmade_feature_map():
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 0:4, 0:4] = 0.5      # tile (0,0): magnitude 0.5
    x[0, 0, 0, 4] = 2.0          # tile (0,1): partial 4x2 tile, magnitude 2.0
    x[0, 0, 4:, 0:4] = 0.1       # tile (1,0): magnitude 0.1; tile (1,1) stays zero
    hook = BlockSparsifier((4, 4), CPU)
    hook.threshold = 1.0
    (out,) = hook(None, (x,))
    assert int(hook.total) == 4 and int(hook.already) == 1
    assert int(hook.below) == 3  # tiles (0,0), (1,0) and the zero tile
    assert torch.count_nonzero(out) == 1 and out[0, 0, 0, 4] == 2.0
    linear = torch.tensor([[0.0] * 16 + [0.2] * 16 + [3.0] + [0.0] * 3])  # 40 features: 3 runs of 16
    hook = BlockSparsifier((4, 4), CPU)
    hook.threshold = 0.5
    (out,) = hook(None, (linear,))
    assert int(hook.total) == 3 and int(hook.already) == 1 and int(hook.below) == 2
    assert out.shape == linear.shape and torch.count_nonzero(out) == 1


def test_sparsity_evaluation_counts_blocks(sparsity_workload):
    evaluator = prepare_evaluator(load_workload(sparsity_workload), CPU)
    base = evaluator.evaluate(None)
    assert np.all(base.blocks_created == 0) and base.cost == 0
    # conv1 sees 1x28x28 inputs in 4x4 tiles: 49 per sample; fc3 sees 84 features in runs of 16: 6 per sample
    assert base.blocks_total[0] == 49 * 200 and base.blocks_total[-1] == 6 * 200
    high = evaluator.evaluate(np.full(5, 15.0))
    assert high.blocks_created.sum() > 0 and high.cost == pytest.approx(high.blocks_created.sum() / 200)
    assert np.allclose(high.params, 1.5)

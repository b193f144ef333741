"""Per layer, how many blocks its input has and how many are zero before any threshold (``qsx-batch blocks``).

Blocks are the tiles of the sparsity problem (``exploration.extra_args.block_size``; see
qsx_batch/problems/sparsity.py). The counts come from one fp32 pass (all thresholds 0) over the exploration
data, through the same Evaluator as the search; a quantization workload is measured as its sparsity twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..evaluation.assembly import prepare_evaluator
from ..workload import Workload


@dataclass
class BlockStats:
    """Per-layer block counts of one workload on its exploration data."""

    layers: list[str]
    input_shapes: list[str]
    block_shape: tuple[int, int]
    samples: int
    total: np.ndarray
    already: np.ndarray

    @property
    def block_label(self) -> str:
        """The tile as width x height."""
        return f"{self.block_shape[1]}x{self.block_shape[0]}"

    def rows(self) -> list[dict]:
        """One record per layer: blocks per sample, zero blocks over all samples and their share."""
        return [{"layer": name, "input_shape": shape, "block_size": self.block_label,
                 "blocks_per_sample": int(total // self.samples), "blocks_total": int(total),
                 "zero_blocks": int(already), "zero_share": float(already / total) if total else 0.0}
                for name, shape, total, already in zip(self.layers, self.input_shapes, self.total, self.already)]


def sparsity_twin(workload: Workload, block_size: int | None) -> Workload:
    """The workload with the sparsity problem (and ``block_size`` when given) in place of its own problem."""
    spec = workload.spec
    extra = spec.exploration.extra_args
    if block_size is not None:
        extra = extra.model_copy(update={"block_size": block_size})
    exploration = spec.exploration.model_copy(update={"extra_args": extra})
    problem = spec.problem.model_copy(update={"problem_function": "sparsity_problem"})
    return Workload(spec.model_copy(update={"problem": problem, "exploration": exploration}), workload.path,
                    workload.text)


def block_stats(workload: Workload, device: torch.device | None = None, block_size: int | None = None) -> BlockStats:
    """Count blocks per layer with every threshold at 0 on the workload's exploration data."""
    twin = sparsity_twin(workload, block_size)
    evaluator = prepare_evaluator(twin, device, datasets=("exploration",))
    result = evaluator.evaluate(None, "exploration")
    if not result.ok:
        raise UserError(f"Counting blocks of workload {workload.path} failed: {result.error}")
    layers = evaluator.problem.layers
    return BlockStats([layer.name for layer in layers], ["x".join(map(str, layer.input_shape)) for layer in layers],
                      twin.spec.exploration.extra_args.block_shape, result.samples, result.blocks_total,
                      result.blocks_already)


def stats_text(stats: BlockStats) -> str:
    """An aligned table of the per-layer counts."""
    height, width = stats.block_shape
    lines = [f"blocks of {stats.block_label} (width x height; Linear: {height} tokens x {width} features, or runs "
             f"of {height * width} features) "
             f"over {stats.samples} exploration samples, all thresholds 0",
             f"  {'layer':<16}{'input':>14}{'per sample':>12}{'total':>12}{'already zero':>14}{'share':>8}"]
    for r in stats.rows():
        lines.append(f"  {r['layer']:<16}{r['input_shape']:>14}{r['blocks_per_sample']:>12}{r['blocks_total']:>12}"
                     f"{r['zero_blocks']:>14}{r['zero_share']:>8.1%}")
    return "\n".join(lines)

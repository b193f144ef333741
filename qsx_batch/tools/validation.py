"""``qsx-batch validate``'s checks: everything a run would trip over, found before it starts.

Beyond the schema (checked by loading): the model and its weights, the problem on the model's layers, racing
and the accuracy function, the starting individuals, one bound per metric, and every dataset block opening with
samples in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import dataset_size
from ..errors import UserError
from ..evaluation.assembly import build_problem, metric_names
from ..evaluation.metrics import check_racing
from ..models.layers import Uncovered, uncovered_layers
from ..problems import Problem
from ..search.initial_population import given_genomes
from ..workload import Workload


@dataclass(frozen=True)
class Coverage:
    """What the search acts on: genes per layer type, the weights covered, and the layers left in fp32."""

    genes: dict[str, tuple[int, int]]  # layer type -> (layers, genes)
    covered_weights: int
    total_weights: int
    uncovered: list[Uncovered]

    def text(self) -> str:
        kinds = ", ".join(f"{kind} {layers} layer{'s' * (layers != 1)} ({genes} genes)"
                          for kind, (layers, genes) in self.genes.items())
        share = self.covered_weights / max(self.total_weights, 1)
        shown = f"{share:.1%}" if share < 0.999 or self.covered_weights == self.total_weights else ">99.9%"
        lines = [f"coverage: {kinds}; {self.covered_weights:,} of the model's {self.total_weights:,} weights "
                 f"({shown})"]
        if self.uncovered:
            lines.append("not searched (fp32): " + ", ".join(f"{u.name} ({u.kind}, {u.weights:,} weights)"
                                                            for u in self.uncovered))
        return "\n".join(lines)


def coverage(problem: Problem) -> Coverage:
    """The problem's :class:`Coverage` of its model."""
    by_name = {layer.name: layer for layer in problem.layers}
    genes: dict[str, list[int]] = {}
    for gene in problem.gene_names:
        layer = max((name for name in by_name if gene.startswith(name + ".")), key=len)
        genes.setdefault(by_name[layer].kind, [0, 0])[1] += 1
    for layer in problem.layers:
        genes.setdefault(layer.kind, [0, 0])[0] += 1
    total = sum(p.numel() for p in problem.model.parameters() if p.dim() >= 2)
    return Coverage({kind: (n, g) for kind, (n, g) in genes.items()}, sum(layer.params for layer in problem.layers),
                    int(total), uncovered_layers(problem.model, list(by_name)))


def validate_workload(workload: Workload) -> Coverage:
    """Check the loaded workload (a UserError names the first problem); no calibration, nothing written. Returns
    what its search covers."""
    check_racing(workload.spec)  # resolves model.accuracy_function too
    problem = build_problem(workload, torch.device("cpu"), calibrate=False)  # model, weights, layers, settings
    given_genomes(workload.spec, problem)  # predefined_parameters, an initial_population list or CSV
    bounds, names = workload.spec.exploration.minimum_accuracy, metric_names(workload, problem)
    if isinstance(bounds, list) and len(bounds) != len(names):
        raise UserError(f"Workload {workload.path}: exploration.minimum_accuracy has {len(bounds)} bounds, but "
                        f"model.accuracy_function returns {len(names)} metric(s); give one bound per metric.")
    for key, block in workload.dataset_blocks().items():
        dataset_size(block, workload.input_path(block.path) if block.path else None, key)
    return coverage(problem)

"""``qsx-batch validate``'s checks: everything a run would trip over, found before it starts.

Beyond the schema (checked by loading): the model and its weights, the problem on the model's layers, racing
and the accuracy function, the starting individuals, one bound per metric, and every dataset block opening with
samples in it.
"""

from __future__ import annotations

import torch

from ..data import dataset_size
from ..errors import UserError
from ..evaluation.assembly import build_problem, metric_names
from ..evaluation.metrics import check_racing
from ..search.initial_population import given_genomes
from ..workload import Workload


def validate_workload(workload: Workload) -> Workload:
    """Check the loaded workload (a UserError names the first problem); no calibration, nothing written."""
    check_racing(workload.spec)  # resolves model.accuracy_function too
    problem = build_problem(workload, torch.device("cpu"), calibrate=False)  # model, weights, layers, settings
    given_genomes(workload.spec, problem)  # predefined_parameters, an initial_population list or CSV
    bounds, names = workload.spec.exploration.minimum_accuracy, metric_names(workload, problem)
    if isinstance(bounds, list) and len(bounds) != len(names):
        raise UserError(f"Workload {workload.path}: exploration.minimum_accuracy has {len(bounds)} bounds, but "
                        f"model.accuracy_function returns {len(names)} metric(s); give one bound per metric.")
    for key, block in workload.dataset_blocks().items():
        dataset_size(block, workload.input_path(block.path) if block.path else None, key)
    return workload

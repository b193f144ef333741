"""``qsx-batch validate``: check a workload file and print it with every default filled in."""

from __future__ import annotations

import argparse
import sys

from .options import add_workload

NAME = "validate"
HELP = "check a workload file and print it with defaults filled in"
DESCRIPTION = ("Check the schema, the model and its weights (a weights file of another architecture is an error "
               "here), the problem on the model's layers, the accuracy function, and that every dataset block "
               "opens and is not empty; then print the workload with every default filled in.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import dataset_size
    from ..errors import UserError
    from ..initial_population import given_genomes
    from ..metrics import check_racing
    from ..prepare import build_problem, metric_names
    from ..workload import dump_workload, load_workload

    workload = load_workload(args.workload)
    check_racing(workload.spec)  # resolves model.accuracy_function too
    problem = build_problem(workload, torch.device("cpu"), calibrate=False)  # model, weights, layers, settings
    given_genomes(workload.spec.exploration, problem)  # predefined_parameters, an initial_population list or CSV
    bounds, names = workload.spec.exploration.minimum_accuracy, metric_names(workload, problem)
    if isinstance(bounds, list) and len(bounds) != len(names):
        raise UserError(f"Workload {workload.path}: exploration.minimum_accuracy has {len(bounds)} bounds, but "
                        f"model.accuracy_function returns {len(names)} metric(s); give one bound per metric.")
    for key, block in workload.dataset_blocks().items():
        dataset_size(block, workload.input_path(block.path) if block.path else None, key)
    print(dump_workload(workload), end="")
    print(f"# {workload.path}: valid", file=sys.stderr)
    return 0

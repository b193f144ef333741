"""``qsx-batch validate``: check a workload file and print it with every default filled in."""

from __future__ import annotations

import argparse
import sys

from .options import add_workload

NAME = "validate"
HELP = "check a workload file and print it with defaults filled in"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)


def run(args: argparse.Namespace) -> int:
    from ..data import dataset_size
    from ..errors import UserError
    from ..models import check_model_type
    from ..problems import problem_class
    from ..problems.costs import COST_FUNCTIONS
    from ..workload import dump_workload, load_workload

    workload = load_workload(args.workload)
    spec = workload.spec
    problem_class(spec.problem.problem_function)
    check_model_type(spec.model.type)
    if spec.model.weights and not workload.input_path(spec.model.weights).is_file():
        raise UserError(f"Workload {workload.path}: model.weights {workload.input_path(spec.model.weights)} does not exist.")
    if spec.exploration.extra_args.bit_weighting_function not in COST_FUNCTIONS:
        raise UserError(f"Unknown exploration.extra_args.bit_weighting_function "
                        f"'{spec.exploration.extra_args.bit_weighting_function}'. Valid names: {', '.join(COST_FUNCTIONS)}.")
    for key, block in spec.dataset_blocks().items():
        dataset_size(block, workload.input_path(block.path) if block.path else None, key)
    print(dump_workload(workload), end="")
    print(f"# {workload.path}: valid", file=sys.stderr)
    return 0

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
    from ..workload import dump_workload, load_workload

    workload = load_workload(args.workload)
    from ..tools.validation import validate_workload  # torch: once the workload loaded

    covered = validate_workload(workload)
    print(dump_workload(workload), end="")
    print("\n".join(f"# {line}" for line in covered.text().splitlines()), file=sys.stderr)
    print(f"# {workload.path}: valid", file=sys.stderr)
    return 0

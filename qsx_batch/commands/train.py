"""``qsx-batch train``: train the model's fp32 weights from the workload's ``training`` section."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_threads, add_workload

NAME = "train"
HELP = "train the model's fp32 weights from the workload's 'training' section"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    p.add_argument("--output", "-o", metavar="FILE", help="weights file to write (default: model.weights)")
    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..workload import load_workload

    workload = load_workload(args.workload)
    output = Path(args.output) if args.output else (
        workload.input_path(workload.spec.model.weights) if workload.spec.model.weights else None)
    if output is None:
        raise UserError("Say where to save the weights: --output FILE (or set model.weights in the workload).")
    from ..tools.training import train_weights  # torch: once the workload loaded

    reports, held_out = train_weights(
        workload, output, on_epoch=lambda r: print(f"epoch {r.epoch:>3}: loss {r.loss:.4f}  validation accuracy {r.accuracy:.4f}"))
    print(f"held-out accuracy {held_out:.4f}; weights -> {output}")
    return 0

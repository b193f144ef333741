"""``qsx-batch retrain``: fine-tune chosen individuals with their bit widths (or thresholds) fixed; the work and
the table ``retraining`` are :mod:`qsx_batch.tools.retraining`'s."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_followup, results_path

NAME = "retrain"
HELP = "quantization-aware fine-tuning of chosen individuals (bit widths fixed)"
DESCRIPTION = ("Fine-tune each chosen individual from a fresh copy of the base weights with the workload's "
               "'retraining' section; store accuracy per epoch and the weights.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_followup(p)
    p.add_argument("--epochs", type=int, metavar="E", help="epochs per individual (default: retraining.epochs)")
    p.add_argument("--out", metavar="DIR", help="folder for the fine-tuned weights (default: <results stem>-retrained)")


def run(args: argparse.Namespace) -> int:
    from ..store.format import RETRAINING
    from ..tools.followup import load_followup

    job = load_followup(results_path(args.results, args.workload), args)
    from ..tools.retraining import retrain  # torch: once the results file and the choice are known good

    retrain(job, args.device, args.epochs, Path(args.out) if args.out else None,
            show=lambda e: print(f"#{e.row:<5} epoch {e.epoch:>3}: loss {e.loss:.4f}  validation accuracy "
                                 f"{e.accuracy:.4f}"),
            saved=lambda row, path: print(f"#{row:<5} fine-tuned weights -> {path}"))
    print(f"accuracy per epoch stored in {job.run.path} (table '{RETRAINING}'); see: qsx-batch inspect {job.run.path}")
    return 0

"""``qsx-batch retrain``: fine-tune chosen individuals with their bit widths (or thresholds) fixed.

Every individual starts from a FRESH model built from the workload's weights file and calibration, with its
own optimizer; weights stay fp32 and are fake-quantized on every forward pass (straight-through gradients), so
the fine-tuned weights fit the individual's bit widths. Train and validation data come from the workload's
``retraining`` section. Validation accuracy before (epoch 0) and after every epoch goes to the table
``retraining`` of the results file; each fine-tuned model is saved as ``<out>/individual-<row>.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_followup

NAME = "retrain"
HELP = "quantization-aware fine-tuning of chosen individuals (bit widths fixed)"
DESCRIPTION = ("Fine-tune each chosen individual from a fresh copy of the base weights with the workload's "
               "'retraining' section; store accuracy per epoch and the weights.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_followup(p)
    p.add_argument("--epochs", type=int, metavar="E", help="epochs per individual (default: retraining.epochs)")
    p.add_argument("--out", metavar="DIR", help="folder for the fine-tuned weights (default: <results stem>-retrained)")


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import UserError
    from ..interrupts import raise_if_requested
    from ..prepare import build_problem, data_budget, load_block, workload_device
    from ..store import open_for_append
    from ..store.format import RETRAINING
    from ..training import accuracy_on, fit, save_finetuned
    from .followup import load_followup

    job = load_followup(args)
    workload = job.workload
    spec = workload.spec.retraining
    if spec is None:
        raise UserError(f"Workload {workload.path} has no 'retraining' section (epochs, learning_rate, datasets.train, "
                        "datasets.validation) to fine-tune with.")
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs {args.epochs}: give at least 1 epoch.")
        spec = spec.model_copy(update={"epochs": args.epochs})
    device = workload_device(workload, args.device)
    budget = data_budget(workload, device)
    val_spec = spec.datasets.validation or workload.spec.exploration.datasets.exploration
    validation = load_block(workload, val_spec, "retraining.datasets.validation", device, budget)
    train = load_block(workload, spec.datasets.train, "retraining.datasets.train", device, budget, cached=False)
    out = Path(args.out) if args.out else job.run.path.with_name(job.run.path.stem + "-retrained")
    first = build_problem(workload, device)
    job.check_problem(first)
    with open_for_append(job.run.path, swmr=False) as writer:
        for i, row in enumerate(job.rows):
            problem = first if i == 0 else build_problem(workload, device)  # fresh model from the weights file
            weights = out / f"individual-{row}.pt"

            def store(epoch: int, loss: float, accuracy: float) -> None:
                writer.append_row(RETRAINING, {
                    "individual": row, "epoch": epoch, "loss": loss, "accuracy": accuracy, "samples": len(validation),
                    "learning_rate": spec.learning_rate, "weights": str(weights.resolve()), "finished_at": time.time()})
                raise_if_requested()
                print(f"#{row:<5} epoch {epoch:>3}: loss {loss:.4f}  validation accuracy {accuracy:.4f}")

            problem.configure_trainable(job.genome(row))
            store(0, float("nan"), accuracy_on(problem.model, validation))
            fit(problem.model, spec, train, validation, workload.spec.seed,
                on_epoch=lambda r: store(r.epoch, r.loss, r.accuracy))
            save_finetuned(problem, weights, row)
            print(f"#{row:<5} fine-tuned weights -> {weights}")
    print(f"accuracy per epoch stored in {job.run.path} (table '{RETRAINING}'); see: qsx-batch inspect {job.run.path}")
    return 0

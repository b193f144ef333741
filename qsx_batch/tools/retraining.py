"""Quantization-aware fine-tuning of chosen individuals with their bit widths (or thresholds) fixed; table
``retraining``.

Every individual starts from a FRESH model built from the workload's weights file and calibration, with its own
optimizer; weights stay fp32 and are fake-quantized on every forward pass (straight-through gradients), so the
fine-tuned weights fit the individual's bit widths. Train and validation data come from the workload's
``retraining`` section. Validation accuracy (the workload's own ``model.accuracy_function``) before (epoch 0) and
after every epoch goes to the table; each fine-tuned model is saved as ``<out>/individual-<row>.pt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, write_failure
from ..evaluation.assembly import build_problem, data_budget, load_block, workload_device
from ..evaluation.metrics import accuracy_function
from ..interrupts import raise_if_requested
from ..store import open_for_append
from ..store.format import RETRAINING
from .followup import FollowUp
from .training import accuracy_on, fit, save_finetuned


@dataclass(frozen=True)
class RetrainedEpoch:
    """One stored row: an individual's validation accuracy after ``epoch`` epochs (0: before fine-tuning)."""

    row: int
    epoch: int
    loss: float
    accuracy: float


def retrain(job: FollowUp, device: str | None, epochs: int | None, out: Path | None,
            show: Callable[[RetrainedEpoch], None] = lambda _: None,
            saved: Callable[[int, Path], None] = lambda row, path: None) -> Path:
    """Fine-tune every chosen individual, storing each epoch as it ends; returns the weights folder."""
    workload = job.workload
    spec = workload.spec.retraining
    if spec is None:
        raise UserError(f"Workload {workload.path} has no 'retraining' section (epochs, learning_rate, datasets.train, "
                        "datasets.validation) to fine-tune with.")
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs {epochs}: give at least 1 epoch.")
        spec = spec.model_copy(update={"epochs": epochs})
    where = workload_device(workload, device)
    budget = data_budget(workload, where)
    val_spec = spec.datasets.validation or workload.spec.exploration.datasets.exploration
    validation = load_block(workload, val_spec, "retraining.datasets.validation", where, budget)
    train = load_block(workload, spec.datasets.train, "retraining.datasets.train", where, budget, cached=False)
    metric = accuracy_function(workload.spec.model.accuracy_function)
    out = out or job.run.path.with_name(job.run.path.stem + "-retrained")
    first = build_problem(workload, where)
    job.check_problem(first)
    finished: list[int] = []
    with open_for_append(job.run.path, swmr=False) as writer, _resumable(job, finished):
        for i, row in enumerate(job.rows):
            problem = first if i == 0 else build_problem(workload, where)  # fresh model from the weights file
            weights = out / f"individual-{row}.pt"

            def store(epoch: int, loss: float, accuracy: float, row: int = int(row), weights: Path = weights) -> None:
                writer.append_row(RETRAINING, {
                    "individual": row, "epoch": epoch, "loss": loss, "accuracy": accuracy, "samples": len(validation),
                    "learning_rate": spec.learning_rate, "weights": str(weights.resolve()), "finished_at": time.time()})
                raise_if_requested()
                show(RetrainedEpoch(row, epoch, loss, accuracy))

            problem.configure_trainable(job.genome(row))
            store(0, float("nan"), accuracy_on(problem.model, validation, metric))
            fit(problem.model, spec, train, validation, workload.spec.seed, metric,
                on_epoch=lambda r, store=store: store(r.epoch, r.loss, r.accuracy))
            save_finetuned(problem, weights, row)
            saved(int(row), weights)
            finished.append(int(row))
    return out


@contextmanager
def _resumable(job: FollowUp, finished: list[int]) -> Iterator[None]:
    """A failed write (a full disk) ends the retraining with the command that retrains the individuals left."""
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        left = " ".join(str(int(row)) for row in job.rows if int(row) not in finished)
        raise UserError(failure.message(job.run.path, f"qsx-batch retrain {job.run.path} --index {left} (and the "
                                        "other options as before)")) from None

"""Score genomes, one by one, on a prepared problem and fixed sample sets.

The single scoring path behind every command: ``explore`` (in-process), the SLURM array tasks, ``evaluate`` and
``blocks``. Build one with :func:`qsx_batch.evaluation.assembly.prepare_evaluator`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import Source
from ..problems import Problem
from .metrics import AccuracyFunction, accuracy_function
from .racing import RaceContext
from .record import IndividualResult, Status


def _slurm_fields() -> dict:
    env = os.environ
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", "")
    task = env.get("SLURM_ARRAY_TASK_ID")
    return {"slurm_job_id": job, "slurm_array_task_id": int(task) if task else -1, "node": env.get("SLURMD_NODENAME", "")}


@dataclass
class Evaluator:
    """Scores genomes of one problem on fixed sample sets named by dataset (``exploration``, ``baseline``, or a
    dotted workload key such as ``reevaluation.datasets.reevaluate``), held in memory or streamed, with the
    workload's accuracy function (one or several metrics; the first is the accuracy)."""

    problem: Problem
    samples: dict[str, Source]
    device: torch.device
    metric: AccuracyFunction = field(default_factory=lambda: accuracy_function("classification_accuracy"))

    def __post_init__(self):
        self.host = socket.gethostname()
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else ""
        self.slurm = _slurm_fields()

    def _forward(self, samples: Source, start: int, stop: int, hits: list | None = None) -> torch.Tensor:
        """(metrics, 2) summed correct and count over samples ``start:stop``, kept on the device; per-label hits
        of the first metric appended to ``hits`` when given (racing's paired comparisons)."""
        totals = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.inference_mode():
            for inputs, labels in samples.batches(start, stop):
                outputs = self.problem.model(inputs)
                totals = totals + self.metric.pairs(outputs, labels)
                if hits is not None:
                    hits.append(self.metric.hits(outputs, labels))
        return totals

    def _race(self, samples: Source, params: np.ndarray,
              race: RaceContext | None) -> tuple[np.ndarray, int, tuple, np.ndarray | None]:
        """Forward over the stages; returns ((metrics, 2) totals, samples used, (reason, low, high) or (), the
        per-label hits when racing with a built-in metric)."""
        total = len(samples)
        sizes, confidence = race.plan(total, samples.batch_size) if race else ([total], 0.0)
        hits = [] if race is not None and self.metric.hits is not None else None
        totals = torch.zeros((), dtype=torch.float64, device=self.device)
        done, verdict = 0, ()
        for n in sizes:
            totals = totals + self._forward(samples, done, n, hits)
            done = n
            if race is not None and n < sizes[-1]:
                created = self.problem.read_counts()[2]
                seen = None if hits is None else torch.cat(hits).cpu().numpy()
                verdict = race.stop_reason(int(totals[0, 0]), n, self.problem.cost(params, created, n), confidence,
                                           seen)
                if verdict[0]:
                    break
                verdict = ()
        return totals.cpu().numpy(), done, verdict, None if hits is None else torch.cat(hits).cpu().numpy()

    def evaluate(self, genome: np.ndarray | None, dataset: str = "exploration",
                 race: RaceContext | None = None) -> IndividualResult:
        """Score one genome (``None``: the fp32 network) on a named sample set; errors become a failed result.

        With a race context the genome is scored stage by stage and may stop early (status ``raced_out``).
        """
        start = time.perf_counter()
        samples = self.samples[dataset]
        lo, _ = self.problem.bounds
        vector = np.full(len(lo), np.nan) if genome is None else np.asarray(genome, dtype=float)
        n_layers = len(self.problem.layers)
        ci = (np.nan, np.nan)
        try:
            self.problem.configure(genome)
            params = self.problem.fp32_params() if genome is None else self.problem.decode(genome)
            totals, used, raced, hits = self._race(samples, params, race)
            total, already, created = self.problem.read_counts()
            metrics = totals[:, 0] / np.maximum(totals[:, 1], 1)
            correct, accuracy = int(totals[0, 0]), float(metrics[0])
            cost = self.problem.cost(params, created, used)
            status, error = Status.OK, ""
            if raced:
                status, error, ci = Status.RACED_OUT, raced[0], raced[1:]
        except Exception as exc:  # one bad individual must not stop a search; the error is recorded
            return IndividualResult.failed(
                genome, len(lo), n_layers, self.problem.worst_cost(), f"{type(exc).__name__}: {exc}",
                samples=len(samples), eval_seconds=time.perf_counter() - start, host=self.host,
                device=str(self.device), gpu=self.gpu, **self.slurm)
        return IndividualResult(
            genome=vector, params=params, accuracy=accuracy, metrics=metrics, correct=correct, samples=used, cost=cost,
            blocks_total=total, blocks_already=already, blocks_created=created,
            eval_seconds=time.perf_counter() - start, host=self.host, device=str(self.device), status=status,
            error=error, gpu=self.gpu, ci_low=float(ci[0]), ci_high=float(ci[1]), hits=hits, **self.slurm,
        )

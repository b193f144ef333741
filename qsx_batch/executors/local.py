"""Evaluate in this process, one individual after the other, on the prepared model."""

from __future__ import annotations

from collections.abc import Iterator

from ..evaluation.evaluator import Evaluator
from ..evaluation.record import IndividualResult
from ..interrupts import raise_if_requested
from .base import EvalRequest, Stage


class LocalExecutor:
    """In-process executor around one prepared :class:`~qsx_batch.evaluation.evaluator.Evaluator`."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def run(self, requests: list[EvalRequest], stage: Stage) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Evaluate the requests in order; a stop request (even one whose exception was swallowed) ends the run
        before the next evaluation."""
        for request in requests:
            raise_if_requested()
            yield request, self.evaluator.evaluate(request.genome, request.dataset, request.race), 1

    def close(self) -> None:
        """Nothing to release."""

"""Evaluate in this process, one individual after the other, on the prepared model."""

from __future__ import annotations

from typing import Iterator

from ..evaluate import Evaluator
from ..result import IndividualResult
from ..search import EvalRequest


class LocalExecutor:
    """In-process executor around one prepared :class:`~qsx_batch.evaluate.Evaluator`."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def run(self, requests: list[EvalRequest], generation: int) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        for request in requests:
            yield request, self.evaluator.evaluate(request.genome, request.dataset, request.race), 1

    def close(self) -> None:
        """Nothing to release."""

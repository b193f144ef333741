"""The executor contract: what to evaluate (:class:`EvalRequest`) and who evaluates it (:class:`Executor`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from ..racing import RaceContext
from ..result import IndividualResult


# What ``Executor.run`` gets as the generation of requests made before the search, in the order they run: the
# baseline (also the stage of 'evaluate'), then the sensitivity sweep.
BASELINE_STAGE = -2
SENSITIVITY_STAGE = -1


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation to perform: a genome (``None`` = fp32 network) on a named dataset."""

    genome: np.ndarray | None
    dataset: str = "exploration"
    label: str = ""
    race: RaceContext | None = None


class Executor(Protocol):
    """Moves evaluation requests to evaluators and their results back, in completion order."""

    def run(self, requests: list[EvalRequest], generation: int) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Yield (request, result, attempt) for every request, as each result becomes available."""

    def close(self) -> None:
        """Release workers and jobs."""

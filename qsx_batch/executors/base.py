"""The executor contract: what to evaluate (:class:`EvalRequest`) and who evaluates it (:class:`Executor`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..evaluation.racing import RaceContext
from ..evaluation.record import IndividualResult


@dataclass(frozen=True)
class Stage:
    """Which requests one :meth:`Executor.run` call holds. The name labels log lines and job folders; ``order`` is
    the stage's place in a search (baseline, sensitivity, generation 0, 1, ...), ``None`` for a re-evaluation,
    which stands apart from any search."""

    name: str
    order: int | None

    @classmethod
    def generation(cls, k: int) -> Stage:
        return cls(f"g{k:04d}", k + 2)

    def earlier(self) -> list[Stage]:
        """The stages a search has finished before this one starts."""
        if self.order is None:
            return []
        return [BASELINE_STAGE, SENSITIVITY_STAGE, *(Stage.generation(k) for k in range(self.order - 2))][: self.order]


BASELINE_STAGE = Stage("baseline", 0)
SENSITIVITY_STAGE = Stage("sensitivity", 1)
EVALUATE_STAGE = Stage("evaluate", None)


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation to perform: a genome (``None`` = fp32 network) on a named dataset."""

    genome: np.ndarray | None
    dataset: str = "exploration"
    label: str = ""
    race: RaceContext | None = None


class Executor(Protocol):
    """Moves evaluation requests to evaluators and their results back, in completion order."""

    def run(self, requests: list[EvalRequest], stage: Stage) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Yield (request, result, attempt) for every request, as each result becomes available."""

    def close(self) -> None:
        """Release workers and jobs."""

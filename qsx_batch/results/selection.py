"""Which stored individuals a command works on: ``--index``, ``--generation``, ``--failed``, ``--pareto``, ``--top``.

The filters apply in that order; ``--pareto`` and ``--top`` consider only usable individuals (evaluated ok and
meeting the run's accuracy constraint). Shared by ``inspect``, ``evaluate`` and ``retrain``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import UserError
from ..evaluation.record import Status
from . import Run
from .pareto import ranking, usable


class Choice(Protocol):
    """The choice options (argparse namespaces of the commands that take them have these attributes)."""

    index: list[int] | None
    generation: int | None
    pareto: bool
    top: int | None
    by: str


def has_choice(choice: Choice) -> bool:
    """Whether any individual-choice option was given."""
    return bool(choice.index or choice.generation is not None or getattr(choice, "failed", False) or choice.pareto
                or choice.top is not None)


def _check_index(rows: list[int], count: int, path) -> np.ndarray:
    bad = [i for i in rows if not 0 <= i < count]
    if bad:
        span = f"0..{count - 1}" if count else "none yet"
        raise UserError(f"Individual index {bad[0]} does not exist in {path}: it holds {count} individuals ({span}).")
    return np.asarray(rows, dtype=int)


def selected_rows(run: Run, args: Choice) -> np.ndarray:
    """Row indices of ``run`` chosen by the options, in display order."""
    ind = run.individuals
    rows = _check_index(args.index, run.count, run.path) if args.index else np.arange(run.count)
    if args.generation is not None:
        stored = int(ind["generation"].max()) if run.count else -1
        if not 0 <= args.generation <= stored:
            held = f"generations 0..{stored}" if stored >= 0 else "no individual yet"
            raise UserError(f"Generation {args.generation} is not in {run.path}: it holds {held}.")
        rows = rows[ind["generation"][rows] == args.generation]
    if getattr(args, "failed", False):
        rows = rows[ind["status"][rows] != Status.OK]
    if args.pareto:
        rows = run.pareto(rows)
    if args.top is not None:
        if args.top < 1:
            raise UserError(f"--top {args.top}: give a positive number of individuals.")
        rows = rows[usable(ind["constraint"][rows], ind["status"][rows])]
        rows = rows[ranking(ind["objectives"][rows], run.header.maximize_cost, args.by)][: args.top]
    return rows

"""Which stored individuals a command works on: ``--index``, ``--generation``, ``--failed``, ``--pareto``, ``--top``.

The filters apply in that order; ``--pareto`` and ``--top`` consider only usable individuals (evaluated ok and
meeting the run's accuracy constraint). Shared by ``inspect``, ``plot``, ``evaluate`` and ``retrain``.
"""

from __future__ import annotations

import argparse

import numpy as np

from .errors import UserError


def add_selection_args(p: argparse.ArgumentParser, failed: bool = True) -> None:
    """The individual-choice options of a subcommand."""
    p.add_argument("--index", type=int, nargs="+", metavar="I", help="individual row numbers (the '#' column)")
    p.add_argument("--generation", type=int, metavar="G", help="only individuals first evaluated in generation G")
    if failed:
        p.add_argument("--failed", action="store_true", help="only individuals not evaluated ok (failed, or raced out)")
    p.add_argument("--pareto", action="store_true", help="only the Pareto front (accuracy up, cost the problem's way)")
    p.add_argument("--top", type=int, metavar="N", help="only the best N individuals, ranked by --by")
    p.add_argument("--by", choices=["accuracy", "cost"], default="accuracy",
                   help="ranking of --top (default: accuracy)")


def has_selection(args: argparse.Namespace) -> bool:
    """Whether any individual-choice option was given."""
    return bool(args.index or args.generation is not None or getattr(args, "failed", False) or args.pareto
                or args.top is not None)


def _check_index(rows: list[int], count: int, path) -> np.ndarray:
    bad = [i for i in rows if not 0 <= i < count]
    if bad:
        span = f"0..{count - 1}" if count else "none yet"
        raise UserError(f"Individual index {bad[0]} does not exist in {path}: it holds {count} individuals ({span}).")
    return np.asarray(rows, dtype=int)


def selected_rows(run, args: argparse.Namespace) -> np.ndarray:
    """Row indices of ``run`` (a :class:`~qsx_batch.report.RunData`) chosen by the options, in display order."""
    from .analysis import ranking, usable

    ind = run.individuals
    rows = _check_index(args.index, run.count, run.path) if args.index else np.arange(run.count)
    if args.generation is not None:
        stored = int(ind["generation"].max()) if run.count else -1
        if not 0 <= args.generation <= stored:
            held = f"generations 0..{stored}" if stored >= 0 else "no individual yet"
            raise UserError(f"Generation {args.generation} is not in {run.path}: it holds {held}.")
        rows = rows[ind["generation"][rows] == args.generation]
    if getattr(args, "failed", False):
        rows = rows[ind["status"][rows] != "ok"]
    if args.pareto:
        rows = run.pareto(rows)
    if args.top is not None:
        if args.top < 1:
            raise UserError(f"--top {args.top}: give a positive number of individuals.")
        rows = rows[usable(ind["constraint"][rows], ind["status"][rows])]
        rows = rows[ranking(ind["objectives"][rows], bool(run.attrs["maximize_cost"]), args.by)][: args.top]
    return rows

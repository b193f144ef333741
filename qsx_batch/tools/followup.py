"""What ``evaluate`` and ``retrain`` share: the chosen individuals of a results file and the run's workload.

Both read the results file first (nothing is written when an option, index or workload is wrong), build
everything they need, and only then open the file for appending (which fails while a run writes it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import results
from ..errors import UserError
from ..results.selection import has_choice, selected_rows
from ..workload import Workload, load_workload

if TYPE_CHECKING:
    from ..problems import Problem


@dataclass
class FollowUp:
    """A results file, its chosen rows and the workload they belong to."""

    run: results.Run
    rows: np.ndarray
    workload: Workload

    def genome(self, row: int) -> np.ndarray:
        return self.run.individuals["genome"][row]

    def check_problem(self, problem: Problem) -> None:
        """Raise a UserError unless ``problem`` has the genes the results file was written with."""
        if list(problem.gene_names) != self.run.gene_names:
            raise UserError(f"The workload's problem has genes {problem.gene_names}, but {self.run.path} was written "
                            f"with {self.run.gene_names}; use the workload of that run.")


def load_followup(path: Path, args: argparse.Namespace) -> FollowUp:
    """Read the results file at ``path`` and resolve the individuals ``args`` choose (a UserError when none are
    chosen). Without torch: a wrong path or choice is reported at once."""
    if not has_choice(args):
        raise UserError("Choose individuals: --top N (best by --by), --pareto, --index I ..., or --generation G.")
    run = results.open(path)
    rows = selected_rows(run, args)
    if not len(rows):
        raise UserError(f"No individual of {run.path} matches the choice; see 'qsx-batch inspect {run.path}'.")
    return FollowUp(run, rows, load_workload(args.workload) if args.workload else run.workload)

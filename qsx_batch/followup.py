"""What ``evaluate`` and ``retrain`` share: options, the chosen individuals, the run's workload and its problem.

Both read the results file first (nothing is written when an option, index or workload is wrong), build
everything they need, and only then open the file for appending (which fails while a run writes it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .selection import add_selection_args, has_selection


def add_followup_parser(sub: argparse._SubParsersAction, name: str, summary: str,
                        description: str) -> argparse.ArgumentParser:
    """A subcommand parser with the shared options: results file, individual choice, workload override, device."""
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument("results", help="results file (.h5) of a finished or stopped run")
    add_selection_args(p, failed=False)
    p.add_argument("--workload", metavar="FILE",
                   help="workload to use instead of the one stored in the results file (same genes required), "
                        "e.g. with dataset paths of another machine")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override exploration.device")
    return p


@dataclass
class FollowUp:
    """A results file, its chosen rows and the workload they belong to."""

    run: "RunData"  # noqa: F821
    rows: np.ndarray
    workload: "Workload"  # noqa: F821

    def genome(self, row: int) -> np.ndarray:
        return self.run.individuals["genome"][row]

    def check_problem(self, problem) -> None:
        """Raise a UserError unless ``problem`` has the genes the results file was written with."""
        if list(problem.gene_names) != self.run.gene_names:
            raise UserError(f"The workload's problem has genes {problem.gene_names}, but {self.run.path} was written "
                            f"with {self.run.gene_names}; use the workload of that run.")


def run_workload(results: Path, override: str | None) -> "Workload":  # noqa: F821
    """The workload a run was made with: ``override`` if given, else the text stored in the results file."""
    from .search import stored_workload_text
    from .store import open_for_reading
    from .workload import load_workload, parse_workload

    if override:
        return load_workload(override)
    with open_for_reading(results) as f:
        anchor = Path(str(f.attrs.get("workload_path", results)))
    return parse_workload(stored_workload_text(results), anchor)


def load_followup(args: argparse.Namespace) -> FollowUp:
    """Read the results file and resolve the chosen individuals (a UserError when none are chosen)."""
    from .report import load_run
    from .selection import selected_rows

    if not has_selection(args):
        raise UserError("Choose individuals: --top N (best by --by), --pareto, --index I ..., or --generation G.")
    path = Path(args.results)
    run = load_run(path)
    rows = selected_rows(run, args)
    if not len(rows):
        raise UserError(f"No individual of {path} matches the choice; see 'qsx-batch inspect {path}'.")
    return FollowUp(run, rows, run_workload(path, args.workload))

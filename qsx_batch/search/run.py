"""A run from start to stop: its results file created or reopened, the search run, and every way it can stop
(done, Ctrl-C/SIGTERM, full disk) ending with the results file closed (after a failed write: left readable) and the
command to continue."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError, write_failure
from ..evaluation.assembly import metric_names
from ..executors.base import Executor
from ..interrupts import Interrupted
from ..problems import Problem
from ..store import ResultsWriter, create_results
from ..workload import Workload
from .initial_population import given_genomes
from .nsga import Search, SearchOptions, run_header


def default_output(workload: Workload) -> Path:
    """``problem.results_file`` (relative to the working folder; the reference tool's ``.pkl`` suffix becomes
    ``.h5``, said on stderr), else ``<results>/<name>-<date>-<time>.h5``."""
    named = workload.spec.problem.results_file
    if not named:
        return workload.results_dir() / f"{workload.name}-{time.strftime('%Y%m%d-%H%M%S')}.h5"
    path = Path(named).expanduser()
    if path.suffix == ".pkl":
        print(f"note: problem.results_file {path}: qsx-batch writes HDF5, not pickles; the results go to "
              f"{path.with_suffix('.h5')}", file=sys.stderr)
        path = path.with_suffix(".h5")
    return path


def create_run(workload: Workload, problem: Problem, output: Path | None) -> ResultsWriter:
    """A new results file for the workload's run (``output``, or :func:`default_output`); starting individuals
    that do not fit the problem are refused before it exists."""
    given_genomes(workload.spec, problem)
    return create_results(output or default_output(workload),
                          run_header(workload, problem, metric_names(workload, problem)))


def ensure_writable(folder: Path) -> None:
    """Raise a UserError unless files can be created in ``folder`` (created when missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"Results folder {folder} is not writable ({exc.strerror or exc}). Choose another one with "
                        "--output or the workload's 'results' key; nothing was submitted.") from None


def run_to_end(work: Callable[[], None], executor: Executor, writer: ResultsWriter, resume_hint: str) -> int:
    """Run ``work`` to its end; on any stop (Ctrl-C, SIGTERM, a failed write such as a full disk) the executor is
    closed, the results file closed (left readable after a failed write) and ``resume_hint`` (the command that
    continues) printed. Returns the exit status (130 when stopped, 1 after a failed write)."""
    try:
        work()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); every finished evaluation is stored in {writer.path}.\n"
              f"resume with: {resume_hint}", file=sys.stderr)
        return 130
    except Exception as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        print(f"\nerror: {failure.message(writer.path, resume_hint)}", file=sys.stderr)
        return 1
    finally:
        executor.close()
        writer.close()
    return 0


def run_search(workload: Workload, problem: Problem, executor: Executor, writer: ResultsWriter,
               options: SearchOptions, command: str) -> int:
    """Run the search to its end (:func:`run_to_end`, the hint ``qsx-batch COMMAND --resume FILE``)."""
    resume_hint = f"qsx-batch {command} --resume {writer.path}"
    if workload.spec.exploration.nsga.generations != writer.workload().spec.exploration.nsga.generations:
        resume_hint += f" --generations {workload.spec.exploration.nsga.generations}"
    status = run_to_end(lambda: Search(workload, problem, executor, writer, options).run(), executor, writer,
                        resume_hint)
    if status == 0:
        print(f"done: {writer.path}\ninspect with: qsx-batch inspect {writer.path}")
    return status

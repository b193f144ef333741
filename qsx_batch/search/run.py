"""A run from start to stop: its results file created or reopened, the search run, and every way it can stop
(done, Ctrl-C/SIGTERM, full disk) ending with the results file closed cleanly and the command to continue."""

from __future__ import annotations

import errno
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..evaluation.assembly import metric_names
from ..executors.base import Executor
from ..interrupts import Interrupted
from ..problems import Problem
from ..store import ResultsWriter, create_results, open_for_append
from ..workload import Workload, differing_keys, load_workload
from .initial_population import given_genomes
from .nsga import Search, SearchOptions, run_header


def open_resumed(path: Path, workload_file: str | None = None,
                 generations: int | None = None) -> tuple[Workload, ResultsWriter]:
    """Reopen a stopped, killed or finished run for appending (its file is opened once) with its workload: the
    one stored in the file, or ``workload_file``, which may differ from it only in ``exploration.nsga.generations``
    (and in where its relative inputs are: they resolve against the given file's folder).
    ``generations`` (or that different value) extends or continues the run to that many generations."""
    writer = open_for_append(path)
    asked = f"--generations {generations}"
    with closed_on_failure(writer):
        stored = writer.workload()
        workload = stored
        if workload_file is not None:
            given = load_workload(workload_file)
            changed = [key for key in differing_keys(stored.spec, given.spec)
                       if key not in ("exploration.nsga.generations", "results")]
            if changed:
                raise UserError(
                    f"Results file {path} was written for a different workload: {given.path} differs from the "
                    f"workload stored in it in {', '.join(changed)}. Only exploration.nsga.generations may change "
                    "(or use --generations); resume with the stored workload (omit the workload argument) or start "
                    "a new run.")
            if generations is None:
                generations = given.spec.exploration.nsga.generations
                asked = f"exploration.nsga.generations: {generations} in {given.path}"
            workload = given  # its inputs resolve against its own folder (e.g. another machine's weights path)
        done = len(writer.read("generations")["evaluated"])
        if generations is not None and generations < done:
            raise UserError(f"{asked}: {path} already holds {done} generations, and a run "
                            f"cannot be shortened. Give {done} or more to continue or extend it; 'qsx-batch inspect "
                            f"{path} --generation G' shows an earlier generation.")
        return (workload if generations is None else workload.with_generations(generations)), writer


def run_workload(workload_file: str | None, resume: Path | None,
                 generations: int | None) -> tuple[Workload, ResultsWriter | None]:
    """The workload of a new run (``workload_file``, default the embedded one) or of the resumed results file
    (:func:`open_resumed`, which also returns its writer), run for ``generations`` when given."""
    if resume is not None:
        return open_resumed(resume, workload_file, generations)
    workload = load_workload(workload_file)
    return (workload if generations is None else workload.with_generations(generations)), None


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


@contextmanager
def closed_on_failure(writer: ResultsWriter | None) -> Iterator[None]:
    """Close ``writer`` (when there is one) if the block raises, then re-raise."""
    try:
        yield
    except BaseException:
        if writer is not None:
            writer.close()
        raise


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
    """Run ``work`` to its end; on any stop the executor is closed, the results file closed cleanly and
    ``resume_hint`` (the command that continues) printed. Returns the exit status (130 when stopped)."""
    try:
        work()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); every finished evaluation is stored in {writer.path}.\n"
              f"resume with: {resume_hint}", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space" in str(exc):
            raise UserError(f"The disk holding {writer.path} is full. Evaluations finished before are stored; "
                            f"free space and resume with: {resume_hint}") from None
        raise
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

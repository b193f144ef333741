"""What a run starts from: its workload, and for a resumed run its reopened results file. Read without torch, so
that a mistyped path or a broken workload is reported at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..store import ResultsWriter, open_for_append
from ..workload import Workload, differing_keys, load_workload


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


@contextmanager
def closed_on_failure(writer: ResultsWriter | None) -> Iterator[None]:
    """Close ``writer`` (when there is one) if the block raises, then re-raise."""
    try:
        yield
    except BaseException:
        if writer is not None:
            writer.close()
        raise

"""The log file of a run (``problem.log_file``, from the reference tool): everything ``explore`` or ``launch``
prints, on the console as before and in the file, each line with one timestamp (lines that carry one already,
as the SLURM executor's do, keep theirs).

The file lives in the results folder unless the path is absolute, and is appended to unless
``problem.clear_log_file``. Progress bars are written with carriage returns; the file keeps only the last state
of such a line, without terminal controls.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..errors import UserError, write_failure
from ..workload import Workload

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal controls of progress bars
STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # time.strftime("%Y-%m-%d %H:%M:%S ")


def log_path(workload: Workload) -> Path | None:
    """Where the run's log goes (None: the workload asks for none)."""
    name = workload.spec.problem.log_file
    if not name:
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else workload.results_dir() / path


class _Log:
    """The open log file shared by the stdout and stderr copies; closed for good after a failed write, so that the
    message about that failure still reaches the terminal."""

    def __init__(self, path: Path, file: TextIO):
        self.path, self.file = path, file

    def write(self, text: str) -> None:
        if self.file is None:
            return
        try:
            self.file.write(text)
            self.file.flush()
        except OSError as exc:
            self.close()
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # its last flush failed: what it holds is all the log can keep
                pass


class _Tee:
    """A text stream that writes through to ``stream`` and, line by line with a timestamp, to ``log``."""

    def __init__(self, stream: TextIO, log: _Log):
        self.stream = stream
        self.log = log
        self.pending = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        stamped = []
        for line in lines:
            line = ANSI.sub("", line.rsplit("\r", 1)[-1])
            if line.strip():
                stamp = "" if STAMPED.match(line) else time.strftime("%Y-%m-%d %H:%M:%S ")
                stamped.append(f"{stamp}{line}\n")
        if stamped:
            self.log.write("".join(stamped))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def run_log(workload: Workload, command: str) -> Iterator[None]:
    """Within the block, copy stdout and stderr into the workload's log file (nothing when it has none)."""
    path = log_path(workload)
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = _Log(path, open(path, "w" if workload.spec.problem.clear_log_file else "a", encoding="utf-8"))
    except OSError as exc:
        if write_failure(exc):
            raise
        raise UserError(f"Cannot open the log file {path} (problem.log_file): {exc.strerror or exc}.") from None
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        print(f"qsx-batch {command} started (workload {workload.path})", file=sys.stderr)
        yield
    finally:
        for tee in (sys.stdout, sys.stderr):
            if tee.pending.strip():
                tee.write("\n")
        sys.stdout, sys.stderr = streams
        log.close()

"""The one exception type for user mistakes, and the one reading of a failed write (a full disk, a quota, an I/O
error, a read-only folder): both end a command with a one-paragraph message instead of a traceback."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (workload, paths, options): shown as a one-paragraph message."""


WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EIO: "an input/output error", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
# HDF5 reports a failed write inside the text of h5py's RuntimeError/OSError: "... filename = '...', ...,
# errno = 28, error message = 'No space left on device', ...".
_HDF5_WRITE = re.compile(r"filename = '(?P<file>[^']*)'.*?errno = (?P<errno>\d+)", re.S)


@dataclass(frozen=True)
class WriteFailure:
    """A write that the environment refused: which file, and why."""

    file: Path | None
    errno: int

    @property
    def reason(self) -> str:
        return f"{WRITE_ERRORS[self.errno]} ({errno.errorcode[self.errno]})"

    def free_space(self) -> str:
        """The space left on the file system of the file (its nearest existing folder)."""
        folder = (self.file.parent if self.file else Path.cwd()).absolute()
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return "free space unknown"
        amount = f"{free / 2 ** 20:.1f} MiB" if free >= 2 ** 20 else f"{free / 1024:.0f} KiB"
        return f"{amount} free in {folder}"

    def message(self, stored: Path | None, resume: str) -> str:
        """One paragraph: the file, the error, the free space, where finished work is, and the command to go on."""
        target = f"Writing {self.file}" if self.file else "A write"
        kept = (f"Every evaluation finished before is stored in {stored}, which stays readable. " if stored
                else "Nothing computed was lost. ")
        return (f"{target} failed: {self.reason}; {self.free_space()}. {kept}Free space (or make the folder "
                f"writable) and continue with: {resume}")


def write_failure(exc: BaseException) -> WriteFailure | None:
    """The failed write behind ``exc`` (an OSError, or h5py's RuntimeError/OSError carrying HDF5's errno), else
    None. HDF5 names a file it created as ``X.new`` by its first name; the file is ``X`` once renamed."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and code in WRITE_ERRORS:
        name = exc.filename if isinstance(exc.filename, (str, os.PathLike)) else None
        return WriteFailure(Path(name) if name else None, code)
    if isinstance(exc, (RuntimeError, OSError)):
        found = _HDF5_WRITE.search(str(exc))
        if found and int(found["errno"]) in WRITE_ERRORS:
            return WriteFailure(Path(found["file"].removesuffix(".new")), int(found["errno"]))
    return None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Within the block, a failed write that names no file (``file.write``, ``torch.save``) names ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno in WRITE_ERRORS:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise

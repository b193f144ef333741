"""A full disk during a run: the results file stays readable, the message names the file, the error, the free space
and the command to go on, and that command completes the run as if nothing happened. Real small file systems
(tmpfs, mounted by the test as root), real runs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import missing, tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.errors import write_failure

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)

# The error text h5py raised when the results folder of a real run filled (HDF5 names the file by its first name).
H5PY_FULL = ("Unable to synchronously flush file (file write failed: time = Sun Dec  6 20:08:46 2026\n, filename = "
             "'/tmp/full/run.h5.new', file descriptor = 4, errno = 28, error message = 'No space left on device', "
             "buf = 0x561b91159c88, total write size = 4416, bytes this sub-write = 4416, offset = 253952)")


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs at tmp_path/disk (needs root: the CI machine's user)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        missing("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves about ``leave`` bytes free on ``disk``."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def fill_once_stored(disk: Path, out: Path, run: subprocess.Popen, rows: int) -> Path:
    """Fill ``disk`` to the last byte as soon as the run writing ``out`` has stored ``rows`` individuals (the disk
    fills during the run, whatever the file's size by then)."""
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if out.exists() and results.open(out).count >= rows:  # the file appears in SWMR mode: readable at once
            filler = disk / "filler"
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            return filler
        time.sleep(0.02)
    raise AssertionError(f"the run ended (status {run.poll()}) before storing {rows} individuals")


def qsx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qsx_batch.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def longer_workload(tmp_path: Path, results_folder: Path, name: str) -> Path:
    data = tiny_workload_dict("quantization", pop_size=12, offsprings=12, generations=30)
    data["workload"]["results"] = str(results_folder)
    return write_workload(tmp_path, data, name)


def test_h5py_and_os_write_errors_are_read_as_failed_writes(tmp_path):
    failure = write_failure(RuntimeError(H5PY_FULL))
    assert failure.file == Path("/tmp/full/run.h5") and failure.errno == errno.ENOSPC
    assert write_failure(OSError(errno.EDQUOT, "Disk quota exceeded", "/x/y.pt")).file == Path("/x/y.pt")
    assert write_failure(OSError(errno.ENOENT, "No such file", "/x")) is None  # a missing file is no write failure
    assert write_failure(RuntimeError("CUDA out of memory")) is None
    message = write_failure(OSError(errno.ENOSPC, "No space left", str(tmp_path / "a.h5"))).message(
        tmp_path / "a.h5", "qsx-batch explore --resume a.h5")
    assert "the disk is full (ENOSPC)" in message and f"free in {tmp_path}" in message
    assert message.endswith("continue with: qsx-batch explore --resume a.h5")


def test_a_full_disk_stops_explore_cleanly_and_resume_completes_the_same_run(tmp_path, small_disk):
    reference = qsx("explore", str(longer_workload(tmp_path, tmp_path / "results", "plain.yaml")), "-o",
                    str(tmp_path / "plain.h5"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    out = small_disk / "run.h5"
    workload = longer_workload(tmp_path, small_disk / "results", "full.yaml")
    with subprocess.Popen([sys.executable, "-m", "qsx_batch.cli", "explore", str(workload), "-o", str(out)],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        filler = fill_once_stored(small_disk, out, run, 12)
        _, stderr = run.communicate(timeout=600)
    stopped = subprocess.CompletedProcess(run.args, run.returncode, "", stderr)
    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stderr
    assert f"Writing {out} failed: the disk is full (ENOSPC)" in stopped.stderr
    assert f"free in {small_disk}" in stopped.stderr and "stays readable" in stopped.stderr
    assert f"continue with: qsx-batch explore --resume {out}" in stopped.stderr
    kept = results.open(out)  # readable, with what was stored before the disk filled
    expected = results.open(tmp_path / "plain.h5")
    assert 0 < kept.count < expected.count

    filler.unlink()
    resumed = qsx("explore", "--resume", str(out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    done = results.open(out)
    assert done.count == expected.count
    np.testing.assert_array_equal(done.individuals["genome"], expected.individuals["genome"])
    np.testing.assert_array_equal(done.individuals["accuracy"], expected.individuals["accuracy"])


def test_a_full_disk_under_the_calibration_file_names_it(tmp_path, small_disk):
    fill(small_disk, 0)
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["calibration"]["file"] = str(small_disk / "calib.pt")
    workload = write_workload(tmp_path, data)
    proc = qsx("explore", str(workload), cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"Writing {small_disk / 'calib.pt'} failed: the disk is full (ENOSPC)" in proc.stderr
    assert "continue with: the same command" in proc.stderr
    assert not (small_disk / "calib.pt").exists() and not (small_disk / "calib.pt.tmp").exists()
    assert yaml.safe_load(workload.read_text())  # the workload is untouched


def test_a_full_disk_under_the_log_file_names_it(tmp_path, small_disk):
    fill(small_disk, 0)
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["problem"]["log_file"] = str(small_disk / "run.log")
    proc = qsx("explore", str(write_workload(tmp_path, data)), cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"Writing {small_disk / 'run.log'} failed: the disk is full (ENOSPC)" in proc.stderr

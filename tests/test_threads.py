"""torch's CPU threads from the allocation (qsx_batch/threads.py), the --threads option and the OpenMP wait policy.

That tasks on the SLURM cluster see their allocation is checked by tests/test_launch.py; speed is measured by
bench/threads.py, never here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from qsx_batch import threads
from qsx_batch.cli import main

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)


@pytest.fixture
def cpus(monkeypatch):
    """Set the affinity mask's size and clear SLURM's CPU variables."""
    for name in threads.SLURM_CPUS:
        monkeypatch.delenv(name, raising=False)

    def affinity(count: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)))

    return affinity


def test_allocation_from_slurm_capped_by_affinity(cpus, monkeypatch):
    cpus(16)
    assert threads.allocation_cpus() == 16 and threads.default_threads() == threads.MAX_DEFAULT_THREADS
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")  # a SLURM job without --cpus-per-task
    assert threads.allocation_cpus() == threads.default_threads() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")  # SLURM's allocation is not capped ...
    assert threads.default_threads() == 12
    cpus(4)  # ... except by the CPUs the process may run on
    assert threads.default_threads() == 4
    for bad in ("", "0", "-2", "many"):
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", bad)
        assert threads.allocation_cpus() == 3


def test_use_threads_sets_torch(cpus, monkeypatch):
    before = torch.get_num_threads()
    try:
        cpus(2)
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        assert threads.use_threads() == 1 == torch.get_num_threads()
        assert threads.use_threads(3) == 3 == torch.get_num_threads()  # inter-op threads may be fixed already
    finally:
        torch.set_num_threads(before)


def test_threads_chosen_before_torch_loads_are_the_ones_torch_runs():
    """The command line sets the threads before it imports torch (so a mistyped path is reported at once)."""
    code = ("import sys; from qsx_batch.threads import use_threads; assert use_threads(1) == 1; "
            "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1"]  # not torch's default (the machine's cores)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_thread_count_is_one_paragraph(value, capsys):
    assert main(["energy", "--threads", value]) == 2
    err = capsys.readouterr().err
    assert f"--threads {value}: give at least 1 thread" in err and "Traceback" not in err and err.count("\n") == 1


def test_wait_policy_is_set_unless_chosen(monkeypatch):
    for name in threads.WAIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    threads.set_wait_policy()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    threads.set_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_command_sets_policy_before_torch_loads_and_threads(tmp_path):
    """In a fresh process: the wait policy is in the environment before the command imports torch, and
    --threads reaches torch."""
    code = ("import os, sys; from qsx_batch.cli import main; assert 'torch' not in sys.modules; "
            f"rc = main(['energy', '--threads', '1', '--output', {str(tmp_path / 'e.csv')!r}]); import torch; "
            "print(rc, os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_SETTINGS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["0", "PASSIVE", "1"]

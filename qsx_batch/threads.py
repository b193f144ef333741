"""CPU threads that fit the process's allocation: torch's thread count and OpenMP's wait policy.

Without this torch starts one OpenMP thread per core and lets idle threads spin; on a shared node a thread
preempted by another process stalls every parallel region while the others spin (docs/performance.md, "Threads").
Nothing here imports torch at module level: :func:`set_wait_policy` must run before torch loads its OpenMP
runtime, which reads the environment once.
"""

from __future__ import annotations

import os
import sys

from .errors import UserError

MAX_DEFAULT_THREADS = 8  # outside SLURM: a shared login node or workstation is not all ours (docs/performance.md)
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
SLURM_CPUS = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")  # the second: a SLURM job without --cpus-per-task


def slurm_cpus() -> int | None:
    """CPUs SLURM allocated to this task (the first valid one of :data:`SLURM_CPUS`); None outside SLURM."""
    for name in SLURM_CPUS:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def allocation_cpus() -> int:
    """CPUs this process may use: SLURM's allocation (never more than the CPU affinity allows), else the CPUs
    of its affinity mask, else ``os.cpu_count()``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(slurm_cpus() or cpus, cpus)


def default_threads() -> int:
    """Threads when ``--threads`` is not given: the allocation's CPUs; outside SLURM at most
    :data:`MAX_DEFAULT_THREADS`."""
    cpus = allocation_cpus()
    return cpus if slurm_cpus() else min(cpus, MAX_DEFAULT_THREADS)


def set_wait_policy() -> None:
    """Let idle OpenMP threads sleep instead of spinning, unless the environment already chose how they wait.

    Effective only before torch is first imported in this process (and in the processes it starts, such as
    SLURM array tasks, which inherit the environment).
    """
    if not any(name in os.environ for name in WAIT_SETTINGS):
        os.environ.update(WAIT_POLICY)


def use_threads(threads: int | None = None) -> int:
    """Set torch's intra-op and inter-op threads to ``threads`` (None: :func:`default_threads`); returns the count.
    Before torch is imported this sets OpenMP's thread count, which torch adopts when it loads (at most the
    machine's cores): the command line calls this first and imports torch only once the arguments and files are
    known good."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give at least 1 thread (or leave --threads out to use the CPUs of "
                        f"this process's allocation, here {default_threads()}).")
    count = threads or default_threads()
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(count)
        return count
    import torch

    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # settable once per process, before inter-op work starts; qsx-batch runs none
            pass
    return count

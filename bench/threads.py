"""The default ``qsx-batch explore`` on a quiet machine and beside one busy core, with torch's old thread defaults
and with qsx-batch's thread policy (qsx_batch/threads.py).

Usage: ``python bench/threads.py [--generations 5] [--repeats 3] [--json threads.json]``

Each repeat runs every setting twice in fresh processes, quiet and beside one CPU-bound process (a busy loop,
not pinned, started half a second before and killed after). Settings:

- ``before``: torch's defaults as every earlier qsx-batch had them: ``--threads`` set to the thread count torch
  picks in a fresh process, and the OpenMP runtime's own wait policy (``GOMP_SPINCOUNT=300000``, libgomp's
  spin count when OMP_WAIT_POLICY is unset; ``KMP_BLOCKTIME=200`` for Intel's or LLVM's runtime). Setting either
  makes qsx-batch leave the wait policy alone, so this is exactly the old behaviour.
- ``now``: no option, no OpenMP variable: qsx-batch's default (threads from the allocation, passive waits).
- ``one thread``: ``--threads 1`` with the default wait policy, for comparison.

The figure per setting is median(busy seconds) / median(quiet seconds), printed with how many CPUs other
processes kept busy meanwhile (on a shared machine "quiet" is only that quiet). Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import QUANT_WORKLOAD, run_command, workload_copy

TARGET = 2.5  # busy / quiet of the default explore (issue 10)
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
           "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")
PROBE = ("import torch; torch.ones(1); maps = open('/proc/self/maps').read(); "
         "print(torch.get_num_threads(), 'libgomp' if 'libgomp' in maps else 'other')")


def clean_env() -> dict[str, str]:
    """Our environment without thread, wait-policy or SLURM CPU settings."""
    return {k: v for k, v in os.environ.items() if k not in CLEARED}


def settings() -> tuple[dict[str, tuple[list[str], dict[str, str]]], dict]:
    """(extra explore arguments, environment) per setting, and what the torch probe found."""
    threads, runtime = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(), capture_output=True, text=True,
                                      check=True).stdout.split()
    spin = {"GOMP_SPINCOUNT": "300000"} if runtime == "libgomp" else {"KMP_BLOCKTIME": "200"}
    env = clean_env()
    return {
        "before": (["--threads", threads], {**env, **spin}),
        "now": ([], env),
        "one thread": (["--threads", "1"], env),
    }, {"torch_default_threads": int(threads), "openmp_runtime": runtime, "before_env": spin}


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds run so far by every process of this machine (/proc/stat) and by our finished children."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    times = os.times()
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), times.children_user + times.children_system


def timed_explore(workload: Path, output: Path, extra: list[str], env: dict[str, str], busy: bool) -> dict:
    """One ``qsx-batch explore`` in a fresh process, beside a busy loop or not; ``others_cpus``: how many CPUs
    processes other than ours kept busy on average meanwhile (a "quiet" run is only as quiet as that)."""
    load, start = os.getloadavg()[0], time.perf_counter()
    machine0, ours0 = cpu_seconds()
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if loop:
            time.sleep(0.5)
        seconds = run_command([sys.executable, "-m", "qsx_batch.cli", "explore", str(workload), "--output",
                               str(output), "--device", "cpu", *extra], env)
    finally:
        if loop:
            loop.kill()
            loop.wait()
        output.unlink(missing_ok=True)
    machine, ours = (after - before for after, before in zip(cpu_seconds(), (machine0, ours0)))
    return {"seconds": seconds, "busy": busy, "load_average_1min": load,
            "others_cpus": max(0.0, machine - ours) / (time.perf_counter() - start)}


def summary(runs: list[dict]) -> dict:
    """Medians of the quiet and the busy runs of one setting, and busy / quiet."""
    row = {}
    for kind, busy in (("quiet", False), ("busy", True)):
        row[f"{kind}_seconds"] = statistics.median(r["seconds"] for r in runs if r["busy"] == busy)
        row[f"{kind}_others_cpus"] = statistics.median(r["others_cpus"] for r in runs if r["busy"] == busy)
    return {**row, "ratio": row["busy_seconds"] / row["quiet_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=5, help="generations of the default workload (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="quiet + busy runs per setting (default 3)")
    parser.add_argument("--json", metavar="FILE", help="write every run and the medians as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the explore child and the busy loop too
    configs, probe = settings()
    report: dict = {"command": " ".join(["python bench/threads.py", *(sys.argv[1:] if argv is None else argv)]),
                    "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                                "load_average_1min": os.getloadavg()[0], **probe},
                    "generations": args.generations, "target": TARGET, "runs": {name: [] for name in configs}}
    with tempfile.TemporaryDirectory(prefix="qsx-bench-threads-") as tmp:
        workload = workload_copy(QUANT_WORKLOAD, Path(tmp), args.generations)
        run_command([sys.executable, "-m", "qsx_batch.cli", "calibrate", str(workload)], clean_env())  # not timed
        for repeat in range(args.repeats):
            for name, (extra, env) in configs.items():
                for busy in (repeat % 2 == 1, repeat % 2 == 0):  # alternate which runs first
                    run = timed_explore(workload, Path(tmp) / "run.h5", extra, env, busy)
                    report["runs"][name].append(run)
                    print(f"{name:<11} {'busy ' if busy else 'quiet'} {run['seconds']:6.1f} s  (others used "
                          f"{run['others_cpus']:.2f} CPUs)", file=sys.stderr, flush=True)
    report["summary"] = {name: summary(runs) for name, runs in report["runs"].items()}
    m = report["machine"]
    print(f"{m['cpus']} CPUs, torch default {m['torch_default_threads']} threads, OpenMP {m['openmp_runtime']}; "
          f"default explore with {args.generations} generations, medians of {args.repeats}")
    print(f"{'setting':<12}{'quiet s':>9}{'busy s':>9}{'busy/quiet':>12}   other processes' CPUs: quiet, busy")
    for name, row in report["summary"].items():
        print(f"{name:<12}{row['quiet_seconds']:>9.1f}{row['busy_seconds']:>9.1f}{row['ratio']:>12.2f}   "
              f"{row['quiet_others_cpus']:.2f}, {row['busy_others_cpus']:.2f}")
    print(f"target: now busy/quiet <= {TARGET}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

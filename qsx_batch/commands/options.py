"""Options that several commands share, each defined once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..workload import LaunchSpec

if TYPE_CHECKING:
    from ..search.placement import Placement


def add_workload(p: argparse.ArgumentParser) -> None:
    """The optional workload file argument (default: the embedded workload)."""
    p.add_argument("workload", nargs="?", help="workload YAML file (default: the embedded LeNet-5/MNIST quantization)")


def add_results(p: argparse.ArgumentParser) -> None:
    """The optional results file argument (default: the newest in results/)."""
    p.add_argument("results", nargs="?", help="results file (.h5; default: the newest in results/ of the working "
                                              "folder, or in --workload's results folder)")


def results_path(given: str | None, workload_file: str | None = None) -> Path:
    """``given``, or (when absent or ``last``) the newest results file in the results folder of ``workload_file``
    (default: the embedded workload's, results/ of the working folder), said on stderr."""
    from .. import results
    from ..workload import load_workload

    if given not in (None, "last"):
        return Path(given)
    path = results.newest(load_workload(workload_file).results_dir())
    print(f"results file: {path} (the newest in {path.parent}/)", file=sys.stderr)
    return path


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``: where a command computes."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override exploration.device")
    add_threads(p)


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads``: torch's CPU threads (set by the command line before the command runs)."""
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: the CPUs allocated to this process: SLURM_CPUS_PER_TASK or "
                        "SLURM_CPUS_ON_NODE in a SLURM job, else its CPU affinity, at most 8); SLURM tasks of "
                        "launch and evaluate get it too (default: their own allocation)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a search run (``explore`` and ``launch``)."""
    p.add_argument("--output", "-o", metavar="FILE", help="results file to create (default: RESULTS/<name>-<time>.h5)")
    p.add_argument("--resume", nargs="?", const="last", metavar="RESULTS.h5",
                   help="continue the run stored in this results file (alone or 'last': the newest in the "
                        "workload's results folder)")
    p.add_argument("--generations", type=_positive, metavar="N",
                   help="run N generations (default: exploration.nsga.generations); with --resume, extend a "
                        "finished run: only new genomes are evaluated")
    p.add_argument("--skip-baseline", action="store_true", help="do not evaluate the fp32 / all-upper-limit baseline")
    p.add_argument("--progress", action="store_true", help="show progress bars for generations and individuals")
    p.add_argument("--verbose", "-v", action="store_true", help="print every evaluated individual")
    add_device(p)


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """The array-task options (one per LaunchSpec field), shared by ``launch`` and ``evaluate``."""
    g = p.add_argument_group("SLURM")
    g.add_argument("--partition", help="partition of the array tasks (default: the cluster's default partition)")
    g.add_argument("--workers", choices=["persistent", "per-generation"],
                   help="persistent (default): one array job of --tasks tasks serves the whole run; per-generation: "
                        "new array jobs for every generation")
    g.add_argument("--tasks", type=int, metavar="N",
                   help="persistent tasks (default: the population / --individuals-per-task, rounded up)")
    g.add_argument("--lease", type=int, metavar="SECONDS",
                   help="a persistent task ends when the launcher gave no sign of life for this long (default 180)")
    g.add_argument("--gpus-per-task", type=int, metavar="N",
                   help="GPUs per task, as --gres=gpu:N (default 1; 0: CPU); a persistent task runs one evaluator "
                        "per GPU")
    g.add_argument("--cpus-per-task", type=int, metavar="N",
                   help="CPUs per task (default: the partition's); each task runs that many torch threads")
    g.add_argument("--individuals-per-task", type=int, metavar="N",
                   help="per-generation: individuals one task evaluates after loading the model once; persistent: "
                        "sets the default --tasks (default 4)")
    g.add_argument("--array-parallelism", type=int, metavar="N", help="tasks running at once (default 256)")
    g.add_argument("--time", type=int, metavar="MINUTES", help="time limit of one task in minutes (default 60)")
    g.add_argument("--mem", metavar="SIZE", help="memory per task, sbatch syntax such as 32G")
    g.add_argument("--account", help="SLURM account to charge")
    g.add_argument("--qos", help="SLURM quality of service")
    g.add_argument("--container", metavar="IMAGE", help="run each task's Python inside this Apptainer image")
    g.add_argument("--bind", action="append", metavar="SRC[:DST]", help="apptainer --bind for --container (repeatable)")
    g.add_argument("--max-retries", type=int, metavar="N",
                   help="resubmissions of individuals whose task failed, and time-out requeues (default 2)")
    g.add_argument("--keep-jobs", action=argparse.BooleanOptionalAction,
                   help="on Ctrl-C/SIGTERM leave queued and running tasks alone (default: cancel them)")
    g.add_argument("--slurm-opt", action="append", type=_slurm_opt, metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. constraint=a100 (repeatable; KEY alone is a flag)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return value


def _slurm_opt(text: str) -> tuple[str, str | bool]:
    key, sep, value = text.partition("=")
    if not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (for example constraint=a100)")
    return key.strip(), value if sep else True


def given_slurm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The array-task options given on the command line, by LaunchSpec field name."""
    return {name: getattr(args, name) for name in LaunchSpec.model_fields if getattr(args, name, None) is not None}


def placement(args: argparse.Namespace, slurm: bool) -> Placement:
    """Where the command's evaluations run: SLURM array tasks when ``slurm`` or any SLURM option is given."""
    from ..search.placement import Placement  # torch and submitit: only for the commands that run

    given = given_slurm_settings(args)
    return Placement(device=getattr(args, "device", None), threads=getattr(args, "threads", None),
                     slurm=given if slurm or given else None, verbose=getattr(args, "verbose", False))


def add_choice(p: argparse.ArgumentParser, failed: bool = True) -> None:
    """The individual-choice options (qsx_batch.results.selection)."""
    p.add_argument("--index", type=int, nargs="+", metavar="I", help="individual row numbers (the '#' column)")
    p.add_argument("--generation", type=int, metavar="G", help="only individuals first evaluated in generation G")
    if failed:
        p.add_argument("--failed", action="store_true", help="only individuals not evaluated ok (failed, or raced out)")
    p.add_argument("--pareto", action="store_true", help="only the Pareto front (accuracy up, cost the problem's way)")
    p.add_argument("--top", type=int, metavar="N", help="only the best N individuals, ranked by --by")
    p.add_argument("--by", choices=["accuracy", "cost"], default="accuracy",
                   help="ranking of --top (default: accuracy)")


def add_followup(p: argparse.ArgumentParser) -> None:
    """What ``evaluate`` and ``retrain`` take: results file, individual choice, workload override, device."""
    add_results(p)
    add_choice(p, failed=False)
    p.add_argument("--workload", metavar="FILE",
                   help="workload to use instead of the one stored in the results file (same genes required), "
                        "e.g. with dataset paths of another machine")
    add_device(p)

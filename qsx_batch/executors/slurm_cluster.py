"""SLURM's client commands as the SLURM executor needs them, and the checked settings of a run's array tasks.

Settings come from the command line, then the settings a launched run was started with (``run.json``), then
the workload's ``launch:`` section; SLURM itself checks them (``sbatch --test-only``) before anything is
submitted.
"""

from __future__ import annotations

import dataclasses
import getpass
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from submitit.helpers import clean_env

from ..errors import UserError
from ..workload import LaunchSpec, Workload

# sbatch options the executor sets itself (array, logs, signal, name, time limit through --time).
RESERVED_OPTIONS = {"array", "output", "error", "job-name", "signal", "open-mode", "time", "wrap", "test-only"}
DEFAULT_MAX_ARRAY_SIZE = 1001


def require_slurm_clients() -> None:
    """Raise a UserError unless SLURM's client commands are on PATH (this is a SLURM login node)."""
    clients = ("sbatch", "srun", "squeue", "scancel", "sacct", "scontrol")
    missing = [name for name in clients if shutil.which(name) is None]
    if missing:
        raise UserError(
            f"{', '.join(missing)} not found on PATH: this machine is not a SLURM login node. Work on this machine "
            "instead ('qsx-batch explore WORKLOAD' for a search, 'qsx-batch evaluate' without SLURM options), or "
            "run the command where SLURM's commands are."
        )


def resolve_settings(workload: Workload, stored: dict, given: dict[str, Any]) -> LaunchSpec:
    """Command-line values ``given`` over the run's ``stored`` settings over the workload's ``launch:`` section."""
    base = {**workload.spec.launch.model_dump(), **stored}
    data = {**base, **given, "slurm_opt": {**base["slurm_opt"], **dict(given.get("slurm_opt", []))}}
    try:
        settings = LaunchSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')} (launch.{'.'.join(map(str, e['loc']))}) "
                    f"= {e.get('input')!r}: {e['msg']}" for e in exc.errors()]
        raise UserError("Invalid launch settings: " + "; ".join(problems) + ".") from None
    if settings.container and "://" not in settings.container:
        image = Path(settings.container).expanduser()
        if not image.is_file():
            raise UserError(f"Container image {image} (--container / launch.container) does not exist.")
        settings = settings.model_copy(update={"container": str(image.resolve())})
    return settings


def checked_settings(workload: Workload, stored: dict, given: dict[str, Any]) -> LaunchSpec:
    """:func:`resolve_settings` that SLURM accepts (:func:`preflight`; nothing is submitted)."""
    settings = resolve_settings(workload, stored, given)
    preflight(settings, "qsx-preflight")
    return settings


def for_array_tasks(workload: Workload) -> Workload:
    """The workload as array tasks get it: output paths absolute (tasks find the calibration from any folder) and
    no ``problem.gpu_id`` (SLURM assigns each task its GPUs; a one-line note says so when it was set)."""
    spec = workload.spec
    update: dict = {"results": str(workload.results_dir().resolve())}
    if spec.calibration is not None and spec.calibration.file:
        update["calibration"] = spec.calibration.model_copy(
            update={"file": str(Path(spec.calibration.file).expanduser().resolve())})
    if spec.problem.gpu_id is not None:
        print(f"note: problem.gpu_id {spec.problem.gpu_id} is ignored on SLURM, where each task uses the GPUs "
              "SLURM gives it", file=sys.stderr)
        update["problem"] = spec.problem.model_copy(update={"gpu_id": None})
    return dataclasses.replace(workload, spec=spec.model_copy(update=update))


def sbatch_options(settings: LaunchSpec) -> dict[str, Any]:
    """The sbatch options of one array task (``--key=value``; ``True`` is a bare flag) from the launch settings."""
    options: dict[str, Any] = {}
    for key in ("partition", "account", "qos", "mem", "cpus_per_task"):
        if getattr(settings, key) is not None:
            options[key.replace("_", "-")] = getattr(settings, key)
    if settings.gpus_per_task:
        options["gres"] = f"gpu:{settings.gpus_per_task}"
    for key, value in settings.slurm_opt.items():
        flag = key.lstrip("-").replace("_", "-")
        if flag in RESERVED_OPTIONS:
            raise UserError(f"launch.slurm_opt '{key}' is set by qsx-batch itself; use the matching launch option "
                            f"(--time for the time limit) instead. Reserved: {', '.join(sorted(RESERVED_OPTIONS))}.")
        options[flag] = value
    return options


def container_python(image: str, binds: list[str]) -> str:
    """The shell command that runs a task's Python inside an Apptainer image (submitit's ``python`` setting)."""
    words = ["apptainer", "exec", "--nv"]
    for bind in binds:
        words += ["--bind", bind]
    return " ".join(shlex.quote(w) for w in [*words, image, "python3"])


def _as_flags(options: dict[str, Any]) -> list[str]:
    return [f"--{key}" if value is True else f"--{key}={value}" for key, value in options.items() if value is not False]


def preflight(settings: LaunchSpec, job_name: str) -> None:
    """Let SLURM check the task settings (``sbatch --test-only``: nothing is submitted) and that sacct works."""
    command = ["sbatch", "--test-only", f"--job-name={job_name}", f"--time={settings.time}",
               *_as_flags(sbatch_options(settings)), "--wrap", "true"]
    with clean_env():
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(
            f"SLURM refuses the array-task settings; nothing was submitted. '{shlex.join(command)}' said:\n"
            f"{(done.stderr or done.stdout).strip()}\n"
            "Check --partition (sinfo lists them), --account and --qos (sacctmgr show assoc user=$USER), "
            "--gpus-per-task (0 for partitions without GPUs), --mem and --slurm-opt."
        )
    done = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"'sacct' fails ({(done.stderr or done.stdout).strip()}): qsx-batch launch needs SLURM "
                        "accounting to notice cancelled and failed tasks. Ask your admins, or use 'qsx-batch explore'.")


def max_array_size() -> int:
    """The cluster's MaxArraySize (``scontrol show config``): at most this many tasks per array job."""
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", done.stdout, re.M)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def queued_job_ids(job_name: str) -> set[str]:
    """Ids of this user's jobs called ``job_name`` that are still queued or running, one per array task
    (``<array job>_<task>``, as submitit names them)."""
    done = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "--name", job_name, "-o", "%i"],
                          capture_output=True, text=True)
    return set(done.stdout.split())


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the given jobs."""
    subprocess.run(["scancel", *job_ids], capture_output=True)


def release_requeued(job_ids: list[str]) -> list[str]:
    """Start requeued tasks of these jobs now (SLURM holds a requeued job for about two minutes, reason
    BeginTime); returns the task ids released."""
    done = subprocess.run(["squeue", "-h", "-r", "-t", "PD", "-j", ",".join(job_ids), "-o", "%i %r"],
                          capture_output=True, text=True)
    released = []
    for line in done.stdout.splitlines():
        job_id, _, reason = line.partition(" ")
        if reason.strip() == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            released.append(job_id)
    return released

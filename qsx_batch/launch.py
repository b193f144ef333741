"""``qsx-batch launch``: the ``explore`` search with every generation evaluated as SLURM array jobs.

The launcher builds the problem locally on CPU (calibrating once, before any task starts), opens the results
file as its only writer and runs :class:`qsx_batch.search.Search` with a
:class:`~qsx_batch.executors.slurm.SlurmExecutor`. Settings come from the command line, then (on ``--resume``)
the settings this run was started with, then the workload's ``launch:`` section.

Beside the results file ``<run>.h5`` lives ``<run>.jobs/``: ``run.json`` (run token, settings), the submitit
folders ``<generation>-a<attempt>-<uuid>/`` (sbatch scripts, logs) and ``shards-<token>/`` (the results channel).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from pydantic import ValidationError

from .errors import UserError
from .workload import LaunchSpec, Workload

RUN_STATE = "run.json"


def register(sub) -> None:
    """Add the ``launch`` subcommand."""
    from .cli import add_run_options

    p = sub.add_parser(
        "launch", help="run an exploration with every generation as SLURM array jobs",
        description="The explore search on a SLURM cluster: each generation is one array job (submitit); results "
                    "stream into the results file as tasks report them. Options default to the workload's "
                    "'launch:' section (same names with underscores); on --resume, to the run's own settings.",
    )
    p.add_argument("workload", nargs="?", help="workload YAML file (default: the embedded LeNet-5/MNIST quantization)")
    add_run_options(p)
    add_slurm_options(p)
    p.set_defaults(func=cmd_launch)


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """The array-task options (one per LaunchSpec field), shared by ``launch`` and ``evaluate``."""
    g = p.add_argument_group("SLURM")
    g.add_argument("--partition", help="partition of the array tasks (default: the cluster's default partition)")
    g.add_argument("--gpus-per-task", type=int, metavar="N", help="GPUs per task, as --gres=gpu:N (default 1; 0: CPU)")
    g.add_argument("--individuals-per-task", type=int, metavar="N",
                   help="individuals evaluated by one task after loading the model once (default 4)")
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


def slurm_options_given(args: argparse.Namespace) -> bool:
    """Whether any array-task option was given on the command line."""
    return any(getattr(args, name, None) is not None for name in LaunchSpec.model_fields)


def _slurm_opt(text: str) -> tuple[str, str | bool]:
    key, sep, value = text.partition("=")
    if not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (for example constraint=a100)")
    return key.strip(), value if sep else True


def cmd_launch(args) -> int:
    """Check the settings with SLURM, calibrate, open the results file and run the search on the cluster."""
    import torch

    from .cli import run_search, workload_for_run
    from .evaluate import build_problem
    from .executors.slurm import SlurmExecutor, preflight, require_slurm_clients
    from .search import open_run

    require_slurm_clients()
    workload = pin_outputs(workload_for_run(args))
    resume = Path(args.resume) if args.resume else None
    output = Path(args.output) if args.output else None
    settings = launch_settings(workload, read_run_state(resume).get("settings", {}) if resume else {}, args)
    preflight(settings, "qsx-preflight")
    if resume is None:
        ensure_writable(output.parent if output else workload.results_dir())
    problem = build_problem(workload, torch.device("cpu"))  # calibrates here, so tasks never race on the file
    writer = open_run(workload, problem, output, resume)
    try:
        token = start_run_state(writer.path, workload, settings, new=resume is None)
        executor = SlurmExecutor(workload, problem, settings, jobs_folder(writer.path), token, device=args.device,
                                 verbose=args.verbose)
    except BaseException:
        writer.close()
        raise
    print(f"results -> {writer.path}\nSLURM job name {executor.job_name}; sbatch scripts and logs in "
          f"{jobs_folder(writer.path)}", flush=True)
    return run_search(workload, problem, executor, writer, args, "launch")


def launch_settings(workload: Workload, stored: dict, args: argparse.Namespace) -> LaunchSpec:
    """Command line over the run's stored settings over the workload's ``launch:`` section."""
    given = {name: getattr(args, name) for name in LaunchSpec.model_fields if getattr(args, name, None) is not None}
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


def pin_outputs(workload: Workload) -> Workload:
    """The workload with its output paths made absolute, so tasks find the calibration from any folder."""
    spec = workload.spec
    update: dict = {"results": str(workload.results_dir().resolve())}
    if spec.calibration is not None and spec.calibration.file:
        update["calibration"] = spec.calibration.model_copy(
            update={"file": str(Path(spec.calibration.file).expanduser().resolve())})
    return dataclasses.replace(workload, spec=spec.model_copy(update=update))


def ensure_writable(folder: Path) -> None:
    """Raise a UserError unless files can be created in ``folder`` (created when missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"Results folder {folder} is not writable ({exc.strerror or exc}). Choose another one with "
                        "--output or the workload's 'results' key; nothing was submitted.") from None


def jobs_folder(results: Path) -> Path:
    """The folder of a run's SLURM files, beside its results file (must be on a file system the nodes share)."""
    return results.with_name(results.stem + ".jobs")


def read_run_state(results: Path) -> dict:
    """``run.json`` of a run (empty when the run was not launched on SLURM before)."""
    path = jobs_folder(results) / RUN_STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def start_run_state(results: Path, workload: Workload, settings: LaunchSpec, new: bool) -> str:
    """Create (new run: from scratch) or update ``run.json``; returns the run token that names its jobs."""
    folder = jobs_folder(results)
    state = {} if new else read_run_state(results)
    if new and folder.exists():
        shutil.rmtree(folder)  # left over from a deleted results file of the same name
    token = state.get("token") or f"{re.sub(r'[^A-Za-z0-9_.]', '_', workload.name)[:24]}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_STATE).write_text(json.dumps({"token": token, "settings": settings.model_dump()}, indent=1))
    return token

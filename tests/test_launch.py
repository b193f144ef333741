"""``qsx-batch launch`` on a real SLURM cluster (slurm/dev/start-cluster.sh): array jobs, faults, resume.

Needs sbatch/sinfo and a running cluster: the tests skip without one, and FAIL when CI=true.
Faults are injected with the worker's test hook QSX_BATCH_TEST_FAULT (see qsx_batch/executors/worker.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.errors import UserError
from qsx_batch.evaluation.record import genome_key
from qsx_batch.store import open_for_reading, read_table
from qsx_batch.workload import default_workload_path, load_workload

FAULT = "QSX_BATCH_TEST_FAULT"


def write_workload(folder: Path, generations: int = 1, constraint: dict | None = None,
                   launch: dict | None = None) -> Path:
    """The embedded LeNet-5 quantization workload, tiny: population 4, 200 samples, a random start, results under
    ``folder``."""
    source = default_workload_path()
    data = yaml.safe_load(source.read_text())
    w = data["workload"]
    w["model"]["weights"] = str((source.parent / w["model"]["weights"]).resolve())
    w["results"] = str(folder / "results")
    w["exploration"]["nsga"].update(pop_size=4, offsprings=4, generations=generations)
    w["exploration"]["initial_population"] = "random"
    for block in (w["exploration"]["datasets"]["exploration"], w["exploration"]["datasets"]["baseline"],
                  w["calibration"]["datasets"]["calibrate"]):
        block["sample_limit"] = 200
    if constraint is not None:  # no accuracy drop -> no fp32 baseline job needed with --skip-baseline
        w["exploration"].pop("allowable_accuracy_drop")
        w["exploration"].update(constraint)
    if launch is not None:
        w["launch"] = launch
    path = folder / "workload.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def launch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qsx_batch.cli", "launch", *args]


PER_GENERATION = ("--workers", "per-generation")


def fault_env(value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != FAULT}
    return env if value is None else {**env, FAULT: value}


def individuals(path: Path) -> dict[str, np.ndarray]:
    with open_for_reading(path) as f:
        return read_table(f, "individuals")


def generations_stored(path: Path) -> int:
    with open_for_reading(path) as f:
        return len(read_table(f, "generations")["evaluated"])


def evaluated_keys(jobs: Path) -> list[str]:
    """Every 'evaluated KEY' line the workers printed (one per evaluation, across attempts and requeues)."""
    return [m for log in jobs.glob("*/*_log.out") for m in re.findall(r"^evaluated (\w+)", log.read_text(), re.M)]


def task_threads(jobs: Path) -> list[int]:
    """The torch thread count every task printed ('torch threads N', once per task that evaluated)."""
    return [int(n) for log in jobs.glob("*/*_log.out") for n in re.findall(r"^torch threads (\d+)$", log.read_text(), re.M)]


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
STAGE_LINE = re.compile(rf"^{STAMP}(\w+): (\d+) individuals in (\d+) tasks: at most (\d+) queued and (\d+) running at "
                        r"once; (\d+) finished, (\d+) retried, (\d+) failed; ([\d.]+) s$", re.M)


def stage_lines(log: str) -> dict[str, tuple[int, ...]]:
    """The executor's line per generation (stage): individuals, tasks, most queued, most running, finished,
    retried, failed; and its wall seconds."""
    return {m[0]: (*map(int, m[1:8]), float(m[8])) for m in STAGE_LINE.findall(log)}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rows_of_task(path: Path, task: int) -> int:
    if not path.exists():
        return 0
    try:
        return int(np.sum(individuals(path)["slurm_array_task_id"] == task))
    except (UserError, OSError, KeyError):  # the launcher is still creating the file
        return 0


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a launcher still running (it cancels its jobs) and wait for it."""
    if proc.poll() is None:
        proc.terminate()
        proc.communicate(timeout=60)


def test_launch_records_slurm_ids_and_matches_explore(slurm, tmp_path):
    workload = write_workload(tmp_path, generations=2)
    out = tmp_path / "launch.h5"
    loaded = tmp_path / "modules"  # each task of attempt 1 lists the modules it imported (worker test hook)
    done = subprocess.run(launch_command(str(workload), "--output", str(out), "--individuals-per-task", "2",
                                         "--cpus-per-task", "1", *PER_GENERATION),
                          capture_output=True, text=True, timeout=240, env=fault_env(f"modules={loaded}"))
    assert done.returncode == 0, done.stderr
    assert main(["explore", str(workload), "--output", str(tmp_path / "explore.h5"), "--device", "cpu",
                 "--threads", "1"]) == 0  # as the tasks: the same thread count sums in the same order

    listings = list(tmp_path.glob("modules.*"))
    assert listings
    for listing in listings:  # an array task loads the worker side only
        modules = json.loads(listing.read_text())
        assert "qsx_batch.executors.worker" in modules
        assert [m for m in modules if m.split(".")[0] in ("h5py", "pymoo") or m.startswith(
            ("qsx_batch.commands", "qsx_batch.store", "qsx_batch.search", "qsx_batch.cli"))] == []

    ind = individuals(out)
    assert generations_stored(out) == 2
    assert set(ind["status"]) == {"ok"} and set(ind["attempt"]) == {1}
    assert all(re.fullmatch(r"\d+", job) for job in ind["slurm_job_id"])
    assert set(ind["slurm_array_task_id"]) == {0, 1}  # 4 individuals per generation, 2 per task
    assert set(ind["node"]) == {socket.gethostname().split(".")[0]}
    assert len(set(ind["slurm_job_id"])) == 2  # one array job per generation

    ref = individuals(tmp_path / "explore.h5")
    def scores(table):
        return {genome_key(g): (gen, a, c) for g, gen, a, c in
                zip(table["genome"], table["generation"], table["accuracy"], table["cost"])}

    assert scores(ind) == scores(ref)

    jobs = tmp_path / "launch.jobs"
    keys = evaluated_keys(jobs)
    assert len(keys) == len(set(keys)) == len(ind["genome"]) + 4  # + baseline: fp32/all-8-bit on 2 datasets
    assert not list(jobs.glob("*/*.pkl"))  # finished submissions' pickles are cleaned up

    scripts = list(jobs.glob("*/*_submission.sh"))
    assert len(scripts) == 3 and all("#SBATCH --cpus-per-task=1\n" in s.read_text() for s in scripts)
    assert task_threads(jobs) == [1] * 6  # SLURM_CPUS_PER_TASK=1, though the task's affinity has both CPUs

    stages = stage_lines(done.stderr)  # one timestamped line per generation, and one for the baseline
    assert set(stages) == {"baseline", "g0000", "g0001"}
    assert stages["baseline"][:2] == stages["g0000"][:2] == (4, 2)
    for _, tasks, queued, running, finished, retried, failed, seconds in stages.values():
        assert finished == tasks and retried == failed == 0 and 0 < seconds < 240
        assert queued <= tasks and running <= 2  # a node of 2 CPUs runs at most 2 tasks of 1 CPU
    baseline = rf"^{STAMP}baseline +fp32 on exploration: mnist_embedded validation, 200 samples: accuracy"
    assert re.search(baseline, done.stderr, re.M)  # the search's lines too
    assert re.search(rf"^{STAMP}accuracy constraint: >= ", done.stderr, re.M)


def test_raising_tasks_split_arrays_retry_and_failed_records(slurm, tmp_path, monkeypatch):
    import torch

    from qsx_batch.evaluation.assembly import build_problem
    from qsx_batch.executors.base import EvalRequest, Stage
    from qsx_batch.executors.job_files import JobFiles
    from qsx_batch.executors.slurm import StageArrays
    from qsx_batch.executors.slurm_cluster import for_array_tasks
    from qsx_batch.workload import LaunchSpec

    monkeypatch.setenv(FAULT, "raise")  # task 0 of every attempt-1 array raises after its first result
    workload = for_array_tasks(load_workload(write_workload(tmp_path)))
    problem = build_problem(workload, torch.device("cpu"))
    lower, upper = problem.bounds
    genomes = [lower + np.eye(len(lower))[i % 2] * (i // 2 + 1) for i in range(8)]  # 8 distinct genomes
    logs: list[str] = []

    def run(retries: int, generation: int, chosen: list[np.ndarray]) -> list:
        settings = LaunchSpec(individuals_per_task=2, max_retries=retries, time=5)
        executor = StageArrays(workload, problem, settings, JobFiles(tmp_path / "jobs", "t1"), log=logs.append,
                                 verbose=True)
        executor.max_array_size = 1  # as on a cluster with MaxArraySize=1: one array job per chunk
        try:
            return list(executor.run([EvalRequest(g) for g in chosen], Stage.generation(generation)))
        finally:
            executor.close()

    retried = run(1, 0, genomes[:4])
    assert len({genome_key(r.genome) for r, _, _ in retried}) == 4
    assert sorted(a for _, _, a in retried) == [1, 1, 2, 2]  # each task kept its first result; the second retried
    assert all(res.ok for _, res, _ in retried)
    assert sum("SLURM job" in line and "attempt 1" in line for line in logs) == 2  # chunks split over two arrays
    assert any("raised RuntimeError: injected fault" in line for line in logs)
    (line,) = [line for line in logs if line.startswith("g0000: 4 individuals")]  # both retried, the retries finished
    match = re.fullmatch(r"g0000: 4 individuals in (\d) tasks: .*; (\d) finished, 2 retried, 0 failed; [\d.]+ s", line)
    assert match and int(match[1]) == int(match[2]) + 2, line

    failed = [res for _, res, _ in run(0, 1, genomes[4:8]) if not res.ok]
    assert len(failed) == 2
    assert "; 0 finished, 0 retried, 2 failed; " in logs[-1] and logs[-1].startswith("g0001: 4 individuals in 2 tasks")
    assert all(res.status == "failed" and "injected fault" in res.error and res.slurm_job_id for res in failed)
    assert all(res.cost == problem.worst_cost() and res.accuracy == 0.0 for res in failed)
    keys = evaluated_keys(tmp_path / "jobs")
    assert len(keys) == len(set(keys)) == 6


def test_evaluate_through_slurm_matches_local_retries_and_skips_stored(slurm, tmp_path, monkeypatch, capsys):
    workload = write_workload(tmp_path)
    out, local = tmp_path / "run.h5", tmp_path / "local.h5"
    assert main(["explore", str(workload), "--output", str(out), "--skip-baseline"]) == 0
    shutil.copy(out, local)
    rows = ["--index", "0", "1", "2", "3"]
    assert main(["evaluate", str(local), *rows]) == 0

    monkeypatch.setenv(FAULT, "raise")  # array task 0 raises after its first result: one individual is resubmitted
    slurm_args = ["--partition", "cpu", "--gpus-per-task", "0", "--individuals-per-task", "2", "--threads", "2",
                  *PER_GENERATION]
    assert main(["evaluate", str(out), *rows, *slurm_args]) == 0
    err = capsys.readouterr().err
    assert "resubmitting 1 individuals" in err
    assert stage_lines(err)["evaluate"][:2] == (4, 3)  # two tasks, and the resubmission
    (jobs,) = (tmp_path / "run.jobs").glob("evaluate-*")
    assert task_threads(jobs) == [2, 2, 2]  # --threads travels (without it: 1, the task's one CPU)
    with open_for_reading(out) as f:
        remote = read_table(f, "reevaluations")
    with open_for_reading(local) as f:
        here = read_table(f, "reevaluations")
    order = np.argsort(remote["individual"])
    assert list(remote["individual"][order]) == [0, 1, 2, 3] and set(remote["status"]) == {"ok"}
    assert set(remote["dataset"]) == {"reevaluation.datasets.reevaluate"}
    assert np.array_equal(remote["correct"][order], here["correct"])  # the same genomes on the same samples
    assert np.array_equal(remote["cost"][order], here["cost"])
    assert all(re.fullmatch(r"\d+", job) for job in remote["slurm_job_id"]) and all(remote["node"])
    assert len(set(remote["slurm_job_id"])) == 2  # the array job of two tasks, and the resubmission
    assert not list((tmp_path / "run.jobs").glob("evaluate-*/shards-*"))  # the result channel is cleaned up

    monkeypatch.delenv(FAULT)
    assert main(["evaluate", str(out), *rows, "--slurm"]) == 0  # everything is stored: nothing is submitted
    assert capsys.readouterr().out.count("(stored before)") == 4
    with open_for_reading(out) as f:
        assert len(read_table(f, "reevaluations")["individual"]) == 4


def test_cancelled_task_is_resubmitted_and_timed_out_task_requeued(slurm, tmp_path):
    workload = write_workload(tmp_path, constraint={"minimum_accuracy": 0.5})
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(launch_command(str(workload), "--output", str(out), "--skip-baseline",
                                           "--individuals-per-task", "2", "--time", "5", *PER_GENERATION),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=fault_env("sleep=12"))
    try:
        # right after each task's first result (the task then sleeps): cancel task 0, and send task 1 the
        # signal SLURM sends before a time-out
        actions = {0: ["scancel"], 1: ["scancel", "--signal=USR2"]}
        while actions:
            (task,) = wait_for(lambda: [t for t in actions if rows_of_task(out, t)][:1], 120, "a first result")
            job = individuals(out)["slurm_job_id"][0]
            subprocess.run([*actions.pop(task), f"{job}_{task}"], check=True)
        output, _ = proc.communicate(timeout=180)
    finally:
        stop(proc)
    assert proc.returncode == 0, output
    ind = individuals(out)
    assert len(ind["genome"]) == 4 and len({genome_key(g) for g in ind["genome"]}) == 4
    by_task = {(t, a) for t, a, j in zip(ind["slurm_array_task_id"], ind["attempt"], ind["slurm_job_id"]) if j == job}
    assert by_task == {(0, 1), (1, 1)}  # the cancelled task's first result is kept, the requeued one finished
    assert sum(ind["attempt"] == 2) == 1  # the cancelled task's unfinished individual, resubmitted
    assert "CANCELLED" in output
    _, tasks, _, _, finished, retried, failed, _ = stage_lines(output)["g0000"]
    assert (tasks, finished, retried, failed) == (3, 2, 1, 0)  # task 0 retried; the requeued task 1 finished
    states = subprocess.run(["sacct", "-n", "-X", "-D", "-j", f"{job}_1", "-o", "State"],
                            capture_output=True, text=True).stdout
    assert "REQUEUED" in states
    keys = evaluated_keys(tmp_path / "run.jobs")
    assert len(keys) == len(set(keys)) == 4


def test_resume_after_sigkill_reuses_every_evaluation(slurm, tmp_path):
    workload = write_workload(tmp_path, generations=2, constraint={"minimum_accuracy": 0.5})
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(launch_command(str(workload), "--output", str(out), "--skip-baseline",
                                           "--individuals-per-task", "2", *PER_GENERATION),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fault_env("sleep=30"))
    try:
        wait_for(lambda: rows_of_task(out, 0), 120, "the first stored individual")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stored_before = {genome_key(g) for g in individuals(out)["genome"]}

    done = subprocess.run(launch_command("--resume", str(out), "--skip-baseline"), capture_output=True, text=True,
                          timeout=240, env=fault_env(None))
    assert done.returncode == 0, done.stderr
    assert "waiting for SLURM jobs" in done.stderr  # the killed launcher's tasks finish and are reused
    ind = individuals(out)
    assert generations_stored(out) == 2
    assert stored_before <= {genome_key(g) for g in ind["genome"]}
    assert len({genome_key(g) for g in ind["genome"]}) == len(ind["genome"])
    keys = evaluated_keys(tmp_path / "run.jobs")
    assert len(keys) == len(set(keys)) == len(ind["genome"])


@pytest.mark.parametrize("options, message", [
    (["--partition", "nosuchpartition"], "invalid partition"),
    (["--gpus-per-task", "9"], "Requested node configuration is not available"),
    (["--account", "nosuchaccount"], "Invalid account"),
    (["--qos", "nosuchqos"], "Invalid qos"),
    (["--individuals-per-task", "0"], "--individuals-per-task"),
    (["--slurm-opt", "time=5"], "reserved"),
    (["--cpus-per-task", "0"], "--cpus-per-task (launch.cpus_per_task) = 0: input should be greater than or equal to 1"),
    (["--container", "missing.sif"], "does not exist"),
])
def test_bad_settings_submit_nothing(slurm, tmp_path, capsys, options, message):
    workload = write_workload(tmp_path)
    assert main(["launch", str(workload), *options]) == 2
    assert message.lower() in capsys.readouterr().err.lower()
    assert not (tmp_path / "results").exists()


def test_no_sbatch_suggests_explore(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["launch", str(write_workload(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "qsx-batch explore" in err
    assert not (tmp_path / "results").exists()
    run = tmp_path / "run.h5"
    assert main(["explore", str(write_workload(tmp_path)), "--output", str(run), "--skip-baseline"]) == 0
    assert main(["evaluate", str(run), "--index", "0", "--slurm"]) == 2
    assert "sbatch" in capsys.readouterr().err
    assert "reevaluations" not in results.open(run).follow_ups  # nothing was written


def test_unwritable_results_folder(slurm, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["launch", str(write_workload(tmp_path)), "--output", str(blocker / "run.h5")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_launch_section_then_run_settings_then_command_line(tmp_path):
    from qsx_batch.cli import build_parser
    from qsx_batch.commands.options import given_slurm_settings
    from qsx_batch.executors.slurm_cluster import resolve_settings

    workload = load_workload(write_workload(tmp_path, launch={
        "partition": "cpu", "individuals_per_task": 3, "slurm_opt": {"constraint": "a100", "exclusive": True}}))
    args = build_parser().parse_args(["launch", "--partition", "gpu", "--slurm-opt", "constraint=h100",
                                      "--keep-jobs"])
    settings = resolve_settings(workload, {}, given_slurm_settings(args))
    assert (settings.partition, settings.individuals_per_task, settings.keep_jobs) == ("gpu", 3, True)
    assert settings.slurm_opt == {"constraint": "h100", "exclusive": True}
    stored = settings.model_dump() | {"individuals_per_task": 5}
    given = given_slurm_settings(build_parser().parse_args(["launch"]))
    assert resolve_settings(workload, stored, given).individuals_per_task == 5


def test_site_example_is_a_valid_launch_section():
    from qsx_batch.executors.slurm_cluster import container_python, sbatch_options
    from qsx_batch.workload import LaunchSpec

    data = yaml.safe_load((Path(__file__).parents[1] / "slurm" / "site-example.yaml").read_text())
    settings = LaunchSpec.model_validate(data["launch"])
    assert sbatch_options(settings)["constraint"] == "a100"
    assert sbatch_options(settings)["cpus-per-task"] == settings.cpus_per_task == 8
    assert container_python(settings.container, settings.bind) == (
        "apptainer exec --nv --bind /shared/data --bind /scratch/me:/scratch /shared/images/qsx.sif python3")

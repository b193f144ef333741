"""``launch`` with persistent array tasks (the default) on the real SLURM cluster: one array job serves the whole
run; cancelled, retiring and orphaned tasks; resume and takeover; two evaluators in a task of two (fake) GPUs.

Faults come from the workers' test hook QSX_BATCH_TEST_FAULT (qsx_batch/executors/worker.py, pool_task.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from test_launch import (
    STAMP,
    evaluated_keys,
    fault_env,
    generations_stored,
    individuals,
    launch_command,
    rows_of_task,
    stop,
    task_threads,
    wait_for,
    write_workload,
)

from qsx_batch.cli import main
from qsx_batch.evaluation.record import genome_key

POOL_LINE = re.compile(rf"^{STAMP}(\w+): (\d+) individuals on (\d+) persistent tasks: at most (\d+) alive and "
                       r"(\d+) queued, (\d+) replaced; (\d+) retried, (\d+) failed; [\d.]+ s$", re.M)


def pool_lines(log: str) -> dict[str, tuple[int, ...]]:
    """Per stage: individuals, tasks, most alive, most queued, replaced, retried, failed."""
    return {m[0]: tuple(map(int, m[1:])) for m in POOL_LINE.findall(log)}


def pool_arrays(jobs: Path) -> list[dict]:
    (listing,) = jobs.glob("pool-*/tasks.json")
    return json.loads(listing.read_text())


def evaluators(jobs: Path) -> list[str]:
    """The evaluator (``<job>_<task>.e<slot>``) of every published evaluation."""
    return [m for log in jobs.glob("*/*_log.out") for m in re.findall(r"^evaluated \w+ attempt \d+ by (\S+):",
                                                                         log.read_text(), re.M)]


def states(job: str) -> list[str]:
    """The job's final accounting states. slurmdbd records an end a moment after squeue stops listing the job,
    so this waits while sacct still says it runs."""
    def ended():
        done = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True)
        found = done.stdout.split()
        return found if found and not {"PENDING", "RUNNING", "COMPLETING"} & set(found) else None
    return wait_for(ended, 30, f"the accounting of job {job} to record its end")


def queued(job_name_file: Path) -> list[str]:
    name = f"qsx-{json.loads(job_name_file.read_text())['token']}"
    return subprocess.run(["squeue", "-h", "-r", "--name", name, "-o", "%i"], capture_output=True,
                          text=True).stdout.split()


def stored_rows(path: Path) -> int:
    """Individuals in the results file so far (0 while the launcher is still creating it)."""
    return rows_of_task(path, 0) + rows_of_task(path, -1)  # an array of one task is a plain job: task id -1


def scores(table) -> dict:
    return {genome_key(g): (gen, a, c) for g, gen, a, c in
            zip(table["genome"], table["generation"], table["accuracy"], table["cost"])}


def test_one_array_job_serves_the_run_with_an_evaluator_per_gpu_and_matches_explore(slurm, tmp_path):
    workload = write_workload(tmp_path, generations=2)
    out = tmp_path / "launch.h5"
    loaded = tmp_path / "modules"
    # one task of two (fake) GPUs; evaluator 0 pauses after its first result, so evaluator 1 must do the rest
    done = subprocess.run(launch_command(str(workload), "--output", str(out), "--tasks", "1", "--gpus-per-task", "2",
                                         "--cpus-per-task", "2"),
                          capture_output=True, text=True, timeout=240, env=fault_env(f"pause=30,modules={loaded}"))
    assert done.returncode == 0, done.stderr
    assert main(["explore", str(workload), "--output", str(tmp_path / "explore.h5"), "--device", "cpu",
                 "--threads", "1"]) == 0
    ind = individuals(out)
    assert scores(ind) == scores(individuals(tmp_path / "explore.h5"))
    assert generations_stored(out) == 2 and set(ind["status"]) == {"ok"} and set(ind["attempt"]) == {1}

    jobs = tmp_path / "launch.jobs"
    (array,) = pool_arrays(jobs)  # the baseline and both generations: one array job of one task
    assert set(ind["slurm_job_id"]) == {array["job_id"]} and len(array["tasks"]) == 1
    assert states(array["tasks"][0]) == ["COMPLETED"]  # stopped through the stop file, not cancelled
    assert task_threads(jobs) == [1, 1]  # two CPUs shared by the task's two evaluators
    who = evaluators(jobs)
    assert len(who) == len(ind["genome"]) + 4  # + the baseline's 4; nothing evaluated twice
    assert {w.rpartition(".")[2] for w in who} == {"e0", "e1"}
    keys = evaluated_keys(jobs)
    assert len(keys) == len(set(keys))

    (listing,) = tmp_path.glob("modules.*")  # the persistent task loads the worker side only
    modules = json.loads(listing.read_text())
    assert "qsx_batch.executors.pool_task" in modules
    assert [m for m in modules if m.split(".")[0] in ("h5py", "pymoo") or m.startswith(
        ("qsx_batch.commands", "qsx_batch.store", "qsx_batch.search", "qsx_batch.cli"))] == []

    lines = pool_lines(done.stderr)
    assert set(lines) == {"baseline", "g0000", "g0001"}
    for individuals_, tasks, alive, waiting, replaced, retried, failed in lines.values():
        assert (individuals_, tasks, replaced, retried, failed) == (4, 1, 0, 0, 0) and alive <= 1 and waiting <= 1
    assert "stopped the 1 persistent tasks of this launcher" in done.stderr


def test_cancelled_task_has_its_claim_redone_once_and_is_replaced(slurm, tmp_path):
    workload = write_workload(tmp_path, constraint={"minimum_accuracy": 0.5})
    out = tmp_path / "run.h5"
    jobs = tmp_path / "run.jobs"
    proc = subprocess.Popen(launch_command(str(workload), "--output", str(out), "--skip-baseline", "--tasks", "1",
                                           "--gpus-per-task", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=fault_env("hold=120"))
    try:  # the task holds its first claim: cancel it then; its replacement redoes the claim and the rest
        (held,) = wait_for(lambda: [p for p in jobs.glob("pool-*/queue/*.claimed")], 120, "the task's claim")
        task = held.name.split("~")[-1].partition(".")[0]
        subprocess.run(["scancel", task], check=True)
        output, _ = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 0, output
    ind = individuals(out)
    assert len(ind["genome"]) == len({genome_key(g) for g in ind["genome"]}) == 4
    assert sorted(ind["attempt"]) == [1, 1, 1, 2]  # the cancelled task's individual, queued again
    keys = evaluated_keys(jobs)
    assert len(keys) == len(set(keys)) == 4
    assert "queued again (attempt 2 of 3)" in output and "CANCELLED" in output
    assert pool_lines(output)["g0000"][4:] == (1, 1, 0)  # replaced, retried, failed
    assert len(pool_arrays(jobs)) == 2  # the first array job and the replacement's
    assert states(task)[0].startswith("CANCELLED")


def test_task_near_its_time_limit_retires_cleanly_and_is_replaced(slurm, tmp_path):
    workload = write_workload(tmp_path, constraint={"minimum_accuracy": 0.5})
    out = tmp_path / "run.h5"
    # --time 3: SLURM signals 45 s before the end, up to 60 s early; the task claims nothing after
    # 180 - 45 - 60 - 10 = 65 s. It pauses after its first result, so it is idle when it retires, and its
    # replacement evaluates the rest.
    done = subprocess.run(launch_command(str(workload), "--output", str(out), "--skip-baseline", "--tasks", "1",
                                         "--gpus-per-task", "0", "--time", "3"),
                          capture_output=True, text=True, timeout=240, env=fault_env("pause=600"))
    assert done.returncode == 0, done.stderr
    ind = individuals(out)
    assert len({genome_key(g) for g in ind["genome"]}) == 4 and set(ind["attempt"]) == {1}
    first, replacement = pool_arrays(tmp_path / "run.jobs")
    assert (first["round"], replacement["round"]) == (1, 2)
    assert sorted(ind["slurm_job_id"]) == [first["job_id"]] + [replacement["job_id"]] * 3
    assert states(first["tasks"][0]) == ["COMPLETED"]  # it ended before SLURM's signal, not TIMEOUT
    log = next((tmp_path / "run.jobs").glob(f"tasks-a1-*/{first['tasks'][0]}_0_log.out")).read_text()
    assert "stops (time limit) after 1 individuals" in log
    assert pool_lines(done.stderr)["g0000"][4] == 1  # one replaced


def kill_after_first_row(out: Path, fault: str, *options: str) -> None:
    """Launch a 2-generation run on one persistent task (with the test ``fault``), SIGKILL the launcher once the
    first individual is stored."""
    workload = write_workload(out.parent, generations=2, constraint={"minimum_accuracy": 0.5})
    proc = subprocess.Popen(launch_command(str(workload), "--output", str(out), "--skip-baseline", "--tasks", "1",
                                           "--gpus-per-task", "0", *options),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fault_env(fault))
    try:
        wait_for(lambda: stored_rows(out), 120, "the first stored individual")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_killed_launcher_leaves_no_task_beyond_the_lease_and_resume_completes(slurm, tmp_path):
    out = tmp_path / "run.h5"
    state = tmp_path / "run.jobs" / "run.json"
    kill_after_first_row(out, "pause=600", "--lease", "15")
    killed = time.monotonic()
    assert queued(state)  # the task lives on for now ...
    wait_for(lambda: not queued(state), 40, "the orphaned task to end")
    assert time.monotonic() - killed < 15 + 10  # ... and ends within the lease (+ its checks and SLURM's)
    (array,) = pool_arrays(tmp_path / "run.jobs")
    assert states(array["tasks"][0]) == ["COMPLETED"]
    log = next((tmp_path / "run.jobs").glob("tasks-a1-*/*_log.out")).read_text()
    assert "no word from the launcher for 15 s" in log

    stored_before = {genome_key(g) for g in individuals(out)["genome"]}
    done = subprocess.run(launch_command("--resume", str(out), "--skip-baseline"), capture_output=True, text=True,
                          timeout=240, env=fault_env(None))
    assert done.returncode == 0, done.stderr
    ind = individuals(out)
    assert generations_stored(out) == 2 and stored_before <= {genome_key(g) for g in ind["genome"]}
    assert len({genome_key(g) for g in ind["genome"]}) == len(ind["genome"])
    keys = evaluated_keys(tmp_path / "run.jobs")
    assert len(keys) == len(set(keys)) == len(ind["genome"])
    assert len(pool_arrays(tmp_path / "run.jobs")) == 2  # the resumed launcher started a task of its own


def test_resume_takes_over_the_live_tasks_of_a_killed_launcher(slurm, tmp_path):
    out = tmp_path / "run.h5"
    kill_after_first_row(out, "pause=15")
    done = subprocess.run(launch_command("--resume", str(out), "--skip-baseline"), capture_output=True, text=True,
                          timeout=240, env=fault_env(None))
    assert done.returncode == 0, done.stderr
    assert "took over 1 live persistent tasks of the previous launcher" in done.stderr
    (array,) = pool_arrays(tmp_path / "run.jobs")  # no new array job
    ind = individuals(out)
    assert generations_stored(out) == 2 and set(ind["slurm_job_id"]) == {array["job_id"]}
    assert len({genome_key(g) for g in ind["genome"]}) == len(ind["genome"]) and np.all(ind["status"] == "ok")
    keys = evaluated_keys(tmp_path / "run.jobs")
    assert len(keys) == len(set(keys)) == len(ind["genome"])
    assert states(array["tasks"][0]) == ["COMPLETED"]

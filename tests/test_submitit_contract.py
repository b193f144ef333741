"""The private parts of submitit that qsx_batch.executors.slurm reads, checked on a real SLURM job.

pyproject.toml caps submitit to the minor version these hold for; a new submitit that changes them fails here
before it can mislead the executor.
"""

from __future__ import annotations

import math
import pickle
import time
from importlib import metadata

import submitit
from submitit.helpers import clean_env


def test_pinned_minor_version():
    assert metadata.version("submitit").startswith("1.5.")


def test_result_pickle_and_cached_watcher_states(slurm, tmp_path):
    executor = submitit.SlurmExecutor(tmp_path)
    executor.update_parameters(time=5, job_name="qsx-contract", additional_parameters={"partition": "cpu"})
    with clean_env():
        # stdlib functions: the task unpickles them without this test module on its path
        good, bad = executor.submit(math.factorial, 5), executor.submit(math.sqrt, -1.0)
    deadline = time.monotonic() + 240
    while not (good.paths.result_pickle.exists() and bad.paths.result_pickle.exists()):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.5)
    with open(good.paths.result_pickle, "rb") as f:
        assert pickle.load(f) == ("success", 120)
    with open(bad.paths.result_pickle, "rb") as f:
        status, value = pickle.load(f)
    assert status == "error" and "math domain error" in str(value)
    while not (good.watcher.is_done(good.job_id, mode="cache") and bad.watcher.is_done(bad.job_id, mode="cache")):
        assert time.monotonic() < deadline, "sacct never reported the jobs done"
        submitit.SlurmJob.watcher.update()
        time.sleep(1)
    assert good.watcher.get_state(good.job_id, mode="cache") == "COMPLETED"
    assert bad.watcher.get_state(bad.job_id, mode="cache") in ("FAILED", "COMPLETED")
    assert "NodeList" in good.watcher.get_info(good.job_id, mode="cache")

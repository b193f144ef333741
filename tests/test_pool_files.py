"""The persistent tasks' queue folder on its own (qsx_batch/executors/pool_files.py): claims by rename, the cached
listing, put-back and resumed claims. The same queue on the real SLURM cluster is in test_launch_persistent.py."""

from __future__ import annotations

import numpy as np
import pytest

from qsx_batch.executors.base import EvalRequest
from qsx_batch.executors.pool_files import Item, PoolFiles, Work

pytestmark = pytest.mark.quick


def post(files: PoolFiles, tmp_path, seq: int, attempt: int = 1) -> None:
    files.post(seq, "g0001", f"k{seq}", attempt, Work(EvalRequest(np.array([seq])), tmp_path / "shards"))


def test_two_evaluators_claim_every_individual_once_in_posting_order(tmp_path):
    launcher, first, second = (PoolFiles(tmp_path / "pool") for _ in range(3))
    launcher.create()
    for seq in range(6):
        post(launcher, tmp_path, seq)
    taken = {"a.e0": [], "b.e0": []}
    while True:
        got = [files.claim(worker) for files, worker in ((first, "a.e0"), (second, "b.e0"))]
        if not any(got):
            break
        for worker, claimed in zip(taken, got):
            if claimed:
                item, work = claimed
                assert item.worker == worker and work.request.genome.tolist() == [item.seq]
                taken[worker].append(item.seq)
    assert sorted(taken["a.e0"] + taken["b.e0"]) == list(range(6))
    assert taken["a.e0"] == sorted(taken["a.e0"]) and taken["b.e0"] == sorted(taken["b.e0"])
    assert {item.worker for item in launcher.items()} == {"a.e0", "b.e0"}


def test_a_claim_after_the_cached_listing_runs_out_sees_new_and_put_back_work(tmp_path):
    files = PoolFiles(tmp_path / "pool")
    files.create()
    post(files, tmp_path, 0)
    post(files, tmp_path, 1)
    item, _ = files.claim("a.e0")  # lists 0 and 1, claims 0
    post(files, tmp_path, 2)  # posted after that listing
    assert files.claim("a.e0")[0].seq == 1
    files.put_back(item)
    again, work = files.claim("a.e0")
    assert (again.seq, again.attempt, work.request.genome.tolist()) == (0, 2, [0])
    assert files.claim("a.e0")[0].seq == 2
    assert files.claim("a.e0") is None
    assert sorted(i.seq for i, _ in files.claims_of("a.e0")) == [0, 1, 2]
    files.release(again)
    assert not files.holds(again) and sorted(i.seq for i in files.items()) == [1, 2]


def test_queue_names_parse_back_and_foreign_files_are_ignored(tmp_path):
    files = PoolFiles(tmp_path / "pool")
    files.create()
    post(files, tmp_path, 7, attempt=3)
    for foreign in (".00000008~g0001~k8~a1.todo.12.tmp", "notes.txt", "x~y.todo"):
        (files.queue / foreign).write_text("")
    (item,) = files.items()
    assert item == Item(item.name, 7, "g0001", "k7", 3) and item.name == f"{item.stem}.todo"
    claimed, _ = files.claim("123_4.e1")
    assert (claimed.task, Item.parse(claimed.name)) == ("123_4", claimed)

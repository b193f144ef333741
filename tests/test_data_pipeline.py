"""The data pipeline: resident, streaming and cached sources score bit-identically; the data cache is written once
(atomically) and read without decoding; the memory budget; reference-tool dataset keys; webdataset shards."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_workload_dict, write_workload
from imagefolder import write_imagefolder, write_shards
from torchvision import datasets
from torchvision import transforms as T

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.data import MemoryBudget, Samples, open_block, subset_indices
from qsx_batch.data.budget import available_memory, memory_budget
from qsx_batch.data.cache import CachedSamples
from qsx_batch.data.shards import expand_braces
from qsx_batch.data.sources import StreamingSamples, decoding_workers
from qsx_batch.errors import UserError
from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.evaluation.racing import RaceContext
from qsx_batch.threads import allocation_cpus
from qsx_batch.workload import DatasetSpec, load_workload, parse_workload

CPU = torch.device("cpu")
ALL = 2 ** 40  # a budget every test block fits


def image_block(**update) -> dict:
    return {"type": "imagenet", "kind": "imagefolder", "path": "images", "image_size": 32, "batch_size": 8,
            "sample_limit": 30, **update}


def image_workload(tmp_path, **workload) -> dict:
    """ResNet-8 (random weights, seed 0) on a generated ImageFolder of 36 JPEGs (3 classes), cropped to 32x32."""
    write_imagefolder(tmp_path / "images")
    return {"workload": {
        "name": "tiny_images", "results": str(tmp_path / "results"),
        "problem": {"problem_function": "sparsity_problem"},
        "model": {"type": "resnet8"},
        "exploration": {"nsga": {"pop_size": 4, "generations": 1}, "device": "cpu", "extra_args": {"block_size": 4},
                        "datasets": {"exploration": image_block(), "baseline": image_block(sample_limit=None)}},
        **workload}}


def sources(workload, name: str = "exploration") -> dict:
    """The four ways a block can be read: decoded into memory, decoded per pass, from the cache into memory, and
    from the cache per pass."""
    spec = workload.dataset(name)
    root, seed, cache = workload.input_path(spec.path), workload.spec.seed, workload.data_cache_folder()
    return {
        "resident": open_block(spec, root, seed, name, CPU, MemoryBudget(ALL)),
        "streaming": open_block(spec, root, seed, name, CPU, MemoryBudget(0)),
        "cached resident": open_block(spec, root, seed, name, CPU, MemoryBudget(ALL), cache),
        "cached streaming": open_block(spec, root, seed, name, CPU, MemoryBudget(0), cache),
    }


def random_genomes(evaluator, count: int) -> list:
    lo, hi = evaluator.problem.bounds
    rng = np.random.default_rng(0)
    return [None] + [rng.integers(lo.astype(int), hi.astype(int) + 1).astype(float) for _ in range(count)]


def scores(evaluator, source, genomes, race=None) -> list[tuple]:
    evaluator.samples = {"exploration": source}
    results = [evaluator.evaluate(genome, race=race) for genome in genomes]
    assert all(r.status in ("ok", "raced_out") for r in results), [r.error for r in results]
    return [(r.correct, r.samples, r.status, tuple(r.blocks_created)) for r in results]


def test_sources_of_an_image_folder_score_bit_identically(tmp_path):
    torch.manual_seed(0)
    workload = load_workload(write_workload(tmp_path, image_workload(tmp_path)))
    evaluator = prepare_evaluator(workload, CPU, ("exploration",))
    found = sources(workload)
    assert [type(s) for s in found.values()] == [Samples, StreamingSamples, Samples, CachedSamples]
    # the resident inputs are those of torchvision's own ToTensor + Normalize pipeline on the same files
    reference = datasets.ImageFolder(str(tmp_path / "images"), transform=T.Compose([
        T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    index = subset_indices(len(reference), workload.dataset("exploration"), 0)
    assert found["resident"].inputs.dtype == torch.uint8  # a quarter of the float32 size, normalized per batch
    resident = torch.cat([x for x, _ in found["resident"].batches()])
    assert torch.equal(resident, torch.stack([reference[int(i)][0] for i in index]))
    model = evaluator.problem.model
    with torch.inference_mode():
        logits = {name: torch.cat([model(x) for x, _ in source.batches()]) for name, source in found.items()}
    assert all(torch.equal(logits["resident"], other) for other in logits.values())
    genomes = random_genomes(evaluator, 3)
    expected = scores(evaluator, found["resident"], genomes)
    assert len({row[0] for row in expected}) > 1  # the genomes really score differently
    race = RaceContext((0.25, 0.5, 1.0), 0.95, 0.99, np.zeros((0, 2)), True)  # everything races out early
    raced = scores(evaluator, found["resident"], genomes[1:], race)
    assert {row[2] for row in raced} == {"raced_out"} and {row[1] for row in raced} == {8}
    for name, source in found.items():
        assert scores(evaluator, source, genomes) == expected, name
        assert scores(evaluator, source, genomes[1:], race) == raced, name


def test_streamed_embedded_digits_score_like_resident_ones(quant_workload):
    workload = load_workload(quant_workload)
    evaluator = prepare_evaluator(workload, CPU, ("exploration",))
    spec = workload.dataset("exploration").model_copy(update={"batch_size": 64})
    resident = open_block(spec, None, 0, "exploration", CPU, MemoryBudget(ALL))
    streaming = open_block(spec, None, 0, "exploration", CPU, MemoryBudget(0))
    assert isinstance(resident, Samples) and isinstance(streaming, StreamingSamples)
    genomes = random_genomes(evaluator, 4)
    race = RaceContext((0.25, 0.5, 1.0), 0.95, 0.9, np.zeros((0, 2)), False)
    assert scores(evaluator, streaming, genomes) == scores(evaluator, resident, genomes)
    assert scores(evaluator, streaming, genomes[1:], race) == scores(evaluator, resident, genomes[1:], race)


def test_decoding_workers_start_once_and_serve_every_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # two CPUs: two decoding workers
    workload = load_workload(write_workload(tmp_path, image_workload(tmp_path)))
    streaming = sources(workload)["streaming"]
    assert isinstance(streaming, StreamingSamples)
    passes = [list(streaming.batches()), list(streaming.batches(8, 20)), list(streaming.batches())]
    iterator = streaming._passes.loader._iterator
    assert len(iterator._workers) == 2 and all(w.is_alive() for w in iterator._workers)
    list(streaming.batches(0, 8))
    assert streaming._passes.loader._iterator is iterator  # the same worker processes, not new ones
    assert [len(p) for p in passes] == [4, 2, 4] and all(torch.equal(a[0], b[0]) for a, b in zip(passes[0], passes[2]))
    assert torch.equal(passes[1][0][0], passes[0][1][0]) and torch.equal(passes[1][1][0], passes[0][2][0][:4])


def test_training_epochs_are_the_same_resident_or_streamed():
    spec = DatasetSpec(type="mnist_embedded", split="train", sample_limit=100, batch_size=32)
    resident = open_block(spec, None, 0, "train", CPU, MemoryBudget(ALL))
    streaming = open_block(spec, None, 0, "train", CPU, MemoryBudget(0))
    epochs = [source.epoch(torch.Generator().manual_seed(3)) for source in (resident, streaming)]
    for a, b in zip(*epochs, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- the data cache ----------------------------------------------------------------------------------------------
def test_the_cache_is_written_once_and_read_without_the_images(tmp_path, monkeypatch):
    workload = load_workload(write_workload(tmp_path, image_workload(tmp_path)))
    spec, root = workload.dataset("exploration"), tmp_path / "images"
    folder = workload.data_cache_folder()
    first = open_block(spec, root, 0, "exploration", CPU, MemoryBudget(ALL), folder)
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and files[0].startswith("imagenet-32px-") and files[1] == files[0].replace(".labels", "")
    (root / "class0").rename(tmp_path / "moved")  # no image is decoded again, the folder is not even scanned
    monkeypatch.setattr(datasets, "ImageFolder", lambda *a, **k: pytest.fail("decoded again"))
    again = open_block(spec.model_copy(update={"batch_size": 5}), root, 0, "exploration", CPU, MemoryBudget(ALL),
                       folder)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.labels, again.labels)
    assert sorted(p.name for p in folder.iterdir()) == files  # the batch size does not change the content
    for other in (spec.model_copy(update={"sample_limit": 20}), spec.model_copy(update={"image_size": 28})):
        with pytest.raises(pytest.fail.Exception, match="decoded again"):  # another subset or crop: another entry
            open_block(other, root, 0, "exploration", CPU, MemoryBudget(ALL), folder)
    with pytest.raises(pytest.fail.Exception, match="decoded again"):  # another seed draws another subset
        open_block(spec, root, 1, "exploration", CPU, MemoryBudget(ALL), folder)


def test_a_pass_over_the_cache_asks_the_kernel_for_the_next_batch(tmp_path):
    workload = load_workload(write_workload(tmp_path, image_workload(tmp_path)))
    cached = sources(workload)["cached streaming"]
    images = cached.images
    asked = []

    class Spy:  # the map, recording what is asked of the kernel
        def madvise(self, option, start=0, length=None):
            asked.append((option, start, length))
            return real.madvise(option, start, length or len(real) - start)

    real, images.mapping = images.mapping, Spy()
    try:
        passed = list(cached.batches(0, 20))
    finally:
        images.mapping = real
    row = images.array[0].nbytes
    ahead = [(start, length) for option, start, length in asked if option == mmap.MADV_WILLNEED]
    assert len(passed) == 3 and len(ahead) == 2  # before batches 2 and 3 (8 + 8 + 4 of 20 images)
    for (start, length), first, last in zip(ahead, (8, 16), (16, 20)):
        assert start % mmap.PAGESIZE == 0 and start <= images.offset + first * row
        assert start + length == images.offset + last * row


def test_concurrent_writers_and_readers_never_see_half_a_cache(tmp_path):
    write_imagefolder(tmp_path / "images", per_class=30)
    spec = DatasetSpec(**image_block(sample_limit=None))
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "imagenet-32px-0123456789abcdef.npy.tmp-1-dead").write_bytes(b"a writer that was killed")
    seen, errors = [], []

    def write():
        try:
            seen.append(open_block(spec, tmp_path / "images", 0, "x", CPU, MemoryBudget(0), folder))
        except Exception as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert not errors
    assert len({p.name for p in folder.glob("*.labels.npy")}) == 1
    assert len(list(folder.iterdir())) == 3  # the two files, the killed writer's leftover; no temporary file
    inputs = [torch.cat([x for x, _ in source.batches()]) for source in seen]
    assert all(len(x) == 90 and torch.equal(x, inputs[0]) for x in inputs)


def test_a_damaged_cache_is_a_clear_error(tmp_path):
    workload = load_workload(write_workload(tmp_path, image_workload(tmp_path)))
    spec = workload.dataset("exploration")
    open_block(spec, tmp_path / "images", 0, "exploration", CPU, MemoryBudget(0), workload.data_cache_folder())
    images = next(p for p in workload.data_cache_folder().iterdir() if not p.name.endswith(".labels.npy"))
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot be read.*delete it"):
        open_block(spec, tmp_path / "images", 0, "exploration", CPU, MemoryBudget(0), workload.data_cache_folder())


# -- the memory budget and decoding workers ----------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [("512M", 512 * 2 ** 20), ("2G", 2 * 2 ** 30), ("1.5G", 3 * 2 ** 29),
                                            (1000, 1000), ("64KiB", 65536), (0, 0)])
def test_budget_sizes(tmp_path, value, expected):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["data_memory_budget"] = value
    assert load_workload(write_workload(tmp_path, data)).spec.exploration.data_memory_budget == expected


@pytest.mark.parametrize("value", ["lots", "2X", "-1G", -5, "1.5.G"])
def test_bad_budgets_name_the_key(tmp_path, value):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["data_memory_budget"] = value
    with pytest.raises(UserError, match="exploration.data_memory_budget") as info:
        load_workload(write_workload(tmp_path, data))
    assert "\n" not in str(info.value)


def test_blocks_share_the_budget_in_order(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)  # exploration 200 digits (627 kB), baseline 300 (941 kB)
    data["workload"]["exploration"]["data_memory_budget"] = "1M"
    evaluator = prepare_evaluator(load_workload(write_workload(tmp_path, data)), CPU)
    assert isinstance(evaluator.samples["exploration"], Samples)
    assert isinstance(evaluator.samples["baseline"], StreamingSamples)
    assert evaluator.evaluate(None, "baseline").samples == 300
    default = memory_budget(None, CPU).left  # a quarter of what this process can still take (which moves a little)
    assert default > 0 and abs(default - available_memory() // 4) < 2 ** 26


def test_workers_follow_the_allocation(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))  # a node with 16 CPUs
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocation_cpus() == 3
    assert [decoding_workers(n) for n in (1, 2, 10)] == [0, 2, 3]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert decoding_workers(10) == 0
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocation_cpus() >= 1


# -- dataset keys of the reference tool --------------------------------------------------------------------------
USER_DATASET = '''
import torch
from torch.utils.data import TensorDataset
CALLS = []
def weather(path, split, kind, data_root, label_root, severity, condition="fog"):
    CALLS.append(dict(path=path, split=split, kind=kind, data_root=data_root, label_root=label_root,
                      severity=severity, condition=condition))
    return TensorDataset(torch.zeros(12, 1, 28, 28), torch.zeros(12, dtype=torch.long))
def plain(path=None, split=None):
    return TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
'''


def reference_block(**update) -> dict:
    """A block as the reference tool's YOLOP weather workloads write it."""
    return {"type": "weatherdata:weather", "kind": "imagefolder", "path": "/tools/datasets/bdd100k",
            "sample_limit": None, "batch_size": 4, "randomize": True, "data_root": "corrupted",
            "label_root": "labels/100k/val", "severity": 3, "condition": "frost", **update}


def test_extra_keys_reach_a_user_dataset_callable(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "weatherdata.py").write_text(USER_DATASET)
    import weatherdata

    spec = DatasetSpec(**reference_block())
    assert len(open_block(spec, tmp_path, 0, "exploration", CPU, MemoryBudget(ALL))) == 12
    assert weatherdata.CALLS == [{"path": str(tmp_path), "split": None, "kind": "imagefolder", "data_root": "corrupted",
                                  "label_root": "labels/100k/val", "severity": 3, "condition": "frost"}]
    with pytest.raises(UserError, match="weatherdata:plain' cannot be called with .*data_root.*unexpected keyword"):
        open_block(DatasetSpec(**reference_block(type="weatherdata:plain")), tmp_path, 0, "exploration", CPU,
                   MemoryBudget(ALL))


@pytest.mark.parametrize("block,needles", [
    (reference_block(type="imagenet"), ["'data_root'", "'label_root'", "'severity'", "dataset type 'imagenet'",
                                        "Only user dataset callables (type: module.path:callable) take extra keys"]),
    (reference_block(type="bdd100k"), ["dataset type 'bdd100k'", "Only user dataset callables"]),
    ({"type": "mnist_embedded", "sample_limt": 5}, ["'sample_limt'", "Did you mean 'sample_limit'"]),
    ({"type": "mnist_embedded", "kind": "imagefolder"}, ["kind 'imagefolder' is for type imagenet"]),
    ({"type": "imagenet", "kind": "webdataset", "path": "x-{0..3}.tar"}, ["needs total_samples"]),
    ({"type": "imagenet", "kind": "webdataset", "path": "x.tar", "total_samples": 5, "sample_limit": 2},
     ["leave sample_limit null"]),
    ({"type": "imagenet", "path": "x", "total_samples": 5}, ["total_samples is for kind webdataset"]),
    ({"type": "imagenet", "kind": "webdataset", "path": "x-{0..3}.tar", "total_samples": 9},
     ["exploration.datasets.exploration has kind webdataset", "only training blocks", "use kind imagefolder"]),
])
def test_dataset_keys_are_checked_when_the_workload_loads(tmp_path, block, needles):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["datasets"]["exploration"] = block
    with pytest.raises(UserError) as info:
        parse_workload(yaml.safe_dump(data), tmp_path / "w.yaml")
    message = str(info.value)
    assert "workload.exploration" in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_reference_resnet50_dataset_blocks_load_as_written(tmp_path):
    """The dataset blocks of the reference tool's ResNet-50 workload: ImageFolder blocks and webdataset shards."""
    folder = {"type": "imagenet", "kind": "imagefolder", "path": "/tools/datasets/imagenet/val_images",
              "batch_size": 64, "randomize": True}
    data = tiny_workload_dict("quantization", tmp_path)
    w = data["workload"]
    w["calibration"]["datasets"]["calibrate"] = {**folder, "sample_limit": None}
    w["exploration"]["datasets"] = {"exploration": {**folder, "sample_limit": 4096, "batch_size": 128},
                                    "baseline": {**folder, "sample_limit": None, "batch_size": 512}}
    w["retraining"]["datasets"] = {
        "validation": {**folder, "sample_limit": 25000},
        "train": {"type": "imagenet", "kind": "webdataset", "batch_size": 64, "sample_limit": None,
                  "path": "/tools/datasets/imagenet/train/imagenet-train-{0000..0136}.tar", "total_samples": 1281167}}
    spec = parse_workload(yaml.safe_dump(data), tmp_path / "w.yaml").spec
    assert spec.retraining.datasets.train.total_samples == 1281167
    assert len(expand_braces(spec.retraining.datasets.train.path)) == 137


# -- webdataset shards -------------------------------------------------------------------------------------------
def test_brace_patterns():
    assert expand_braces("train-{0000..0002}.tar") == ["train-0000.tar", "train-0001.tar", "train-0002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def shard_spec(**update) -> DatasetSpec:
    return DatasetSpec(**{"type": "imagenet", "kind": "webdataset", "path": "shards/train-{0000..0002}.tar",
                          "total_samples": 15, "batch_size": 4, "image_size": 32, **update})


def test_webdataset_epochs_read_every_sample_once(tmp_path):
    labels = write_shards(tmp_path / "shards")  # shard 0 named like the reference tool's, 1 and 2 like webdataset's
    stream = open_block(shard_spec(), tmp_path / shard_spec().path, 0, "retraining.datasets.train", CPU,
                        MemoryBudget(ALL))
    generator = torch.Generator().manual_seed(0)
    epochs = [[(x, y) for x, y in stream.epoch(generator)] for _ in range(2)]
    for batches in epochs:
        assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(labels)
        assert {tuple(x.shape[1:]) for x, _ in batches} == {(3, 32, 32)} and batches[0][0].dtype == torch.float32
    assert [y.tolist() for _, y in epochs[0]] != [y.tolist() for _, y in epochs[1]]  # shuffled anew every epoch
    wrong = open_block(shard_spec(total_samples=16), tmp_path / shard_spec().path, 0, "retraining.datasets.train", CPU,
                       MemoryBudget(ALL))
    with pytest.raises(UserError, match="hold 15 samples, but its total_samples is 16"):
        list(wrong.epoch(generator))
    with pytest.raises(UserError, match="1 of the 3 tar shards .* do not exist"):
        (tmp_path / "shards" / "train-0001.tar").unlink()
        open_block(shard_spec(), tmp_path / shard_spec().path, 0, "retraining.datasets.train", CPU, MemoryBudget(ALL))


def test_a_broken_shard_is_one_paragraph(tmp_path):
    import io
    import tarfile

    write_shards(tmp_path / "shards")
    with tarfile.open(tmp_path / "shards" / "train-0002.tar", "w") as tar:
        info = tarfile.TarInfo("lonely.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    stream = open_block(shard_spec(), tmp_path / shard_spec().path, 0, "retraining.datasets.train", CPU,
                        MemoryBudget(ALL))
    with pytest.raises(UserError) as info:
        list(stream.epoch(torch.Generator().manual_seed(0)))
    assert "train-0002.tar: sample '/lonely' needs an image" in str(info.value)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


def test_explore_evaluate_and_retrain_read_the_cache_and_train_on_shards(tmp_path, capsys):
    """A run on an image folder: explore decodes it once into the cache; evaluate and retrain read the cache
    (the images are gone by then); retrain fine-tunes on webdataset shards given as a brace pattern."""
    write_shards(tmp_path / "shards")
    data = image_workload(tmp_path, retraining={"epochs": 1, "datasets": {
        "train": {"type": "imagenet", "kind": "webdataset", "path": "shards/train-{0000..0002}.tar",
                  "total_samples": 15, "batch_size": 4, "image_size": 32},
        "validation": image_block(sample_limit=20)}})
    workload = write_workload(tmp_path, data)
    run = tmp_path / "run.h5"
    assert main(["explore", str(workload), "--output", str(run)]) == 0
    assert main(["evaluate", str(run), "--top", "1", "--dataset", "retraining.datasets.validation"]) == 0
    cached = sorted((tmp_path / "results" / "data-cache").iterdir())
    assert len(cached) == 6  # exploration, baseline, retraining validation: images and labels each
    (tmp_path / "images").rename(tmp_path / "gone")
    assert main(["evaluate", str(run), "--top", "2", "--dataset", "baseline"]) == 0
    assert main(["retrain", str(run), "--top", "1"]) == 0
    capsys.readouterr()
    stored = results.open(run)
    assert list(stored.follow_ups["retraining"]["epoch"]) == [0, 1]
    assert set(stored.follow_ups["reevaluations"]["samples"]) == {20, 36}
    assert sorted((tmp_path / "results" / "data-cache").iterdir()) == cached


def test_launch_writes_the_cache_before_any_array_task(slurm, tmp_path):
    """The launcher decodes the image folder into the data cache before it submits anything: the cache files are
    older than every file of the run's jobs folder, so the array tasks only read them."""
    workload = write_workload(tmp_path, image_workload(tmp_path))
    done = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "launch", str(workload), "--output",
                           str(tmp_path / "run.h5"), "--individuals-per-task", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cached = list((tmp_path / "results" / "data-cache").iterdir())
    assert len(cached) == 4  # exploration and baseline: images and labels
    submitted = [path.stat().st_mtime_ns for path in (tmp_path / "run.jobs").rglob("*") if path.is_file()]
    assert max(path.stat().st_mtime_ns for path in cached) <= min(submitted)
    assert set(results.open(tmp_path / "run.h5").individuals["status"]) == {"ok"}

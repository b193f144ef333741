"""Benchmark the evaluation path of qsx-batch against plain fp32 inference, and the default run end to end.

Usage: ``python bench/run.py [--quick] [--device cpu|cuda] [--threads N] --json out.json``

Every ratio is measured in this one process: per round the plain fp32 network, a quantization individual and a
sparsity individual are timed one after the other on the same preloaded samples (the order rotates from round
to round), and the figure is the median of the per-round ratios. The end-to-end figures run the embedded default
workloads with ``qsx-batch explore`` in a temporary folder. Method and results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from torch import nn

from qsx_batch.data import Samples
from qsx_batch.evaluation.assembly import build_problem, load_block, load_model, set_gpu_math
from qsx_batch.evaluation.calibration import calibrate
from qsx_batch.evaluation.evaluator import Evaluator
from qsx_batch.evaluation.record import IndividualResult
from qsx_batch.executors.local import LocalExecutor
from qsx_batch.models import build_model
from qsx_batch.models.attention import expose_attention
from qsx_batch.models.layers import profile_layers, target_layers
from qsx_batch.models.quantized import FUSED_FAKE_QUANT, FUSED_GRID
from qsx_batch.problems import Problem, QuantizationProblem, SparsityProblem
from qsx_batch.problems.sparsity import FUSED_SPARSIFY
from qsx_batch.search.nsga import Search, SearchOptions, run_header
from qsx_batch.store import create_results, open_for_append
from qsx_batch.workload import Workload, default_workload_path, load_workload

WORKLOADS = default_workload_path().parent
QUANT_WORKLOAD = WORKLOADS / "lenet5_mnist_quantization.yaml"
SPARSE_WORKLOAD = WORKLOADS / "lenet5_mnist_sparsity.yaml"
TARGETS = {"quant": 1.1, "sparse": 1.3}  # the CPU's, one thread
GPU_TARGETS = {"lenet5": {"quant": 2.0, "sparse": 2.5}, "other": {"quant": 1.15, "sparse": 1.3}}  # LeNet-5: batch 125
SEARCH_STORE_TARGET = 0.5e-3  # seconds of search and store per individual in the default explore, on any device
QUICK_GENERATIONS = 5  # --quick runs the default workloads with this many generations instead of their 25


@dataclass(frozen=True)
class Case:
    """One network and input size whose evaluation is compared with plain fp32 inference."""

    name: str
    model: str
    image_size: int
    samples: int
    batch_size: int


FULL_CASES = [
    Case("lenet5_mnist_28", "lenet5", 28, 1000, 500),
    Case("resnet18_32", "resnet18", 32, 512, 128),
    Case("resnet18_224", "resnet18", 224, 16, 8),
    Case("vit_b_16_224", "vit_b_16", 224, 8, 4),
]
GPU_CASES = [  # sized to fill a GPU (issue 18's table)
    Case("lenet5_mnist_28_b125", "lenet5", 28, 1000, 125),
    Case("lenet5_mnist_28_b1000", "lenet5", 28, 1000, 1000),
    Case("resnet18_32", "resnet18", 32, 5000, 500),
    Case("resnet18_224", "resnet18", 224, 1024, 128),
    Case("resnet50_224", "resnet50", 224, 1024, 128),
]
QUICK_CASES = [
    Case("lenet5_mnist_28", "lenet5", 28, 1000, 500),
    Case("resnet18_32", "resnet18", 32, 128, 64),
    Case("resnet18_224", "resnet18", 224, 4, 4),
    Case("vit_b_16_224", "vit_b_16", 224, 4, 4),
]


EVALUATED = ("quant", "sparse", "integer")  # the evaluations timed against plain inference


# -- building the cases --------------------------------------------------------------------------------------------
def case_inputs(case: Case, device: torch.device) -> tuple[nn.Module, Samples]:
    """The fp32 network and its preloaded samples: LeNet-5 with the embedded MNIST digits and trained weights of
    the default workload, ResNet-18 and ViT-B/16 with random weights and random images (timing does not depend on
    them). The network is torch's own: plain inference takes its fused attention kernels."""
    if case.model == "lenet5":
        workload = load_workload(QUANT_WORKLOAD)
        block = workload.spec.exploration.datasets.exploration.model_copy(
            update={"sample_limit": case.samples, "batch_size": case.batch_size})
        return load_model(workload, device), load_block(workload, block, "bench").to(device)
    torch.manual_seed(0)
    model = build_model(case.model).eval().to(device)
    inputs = torch.randn(case.samples, 3, case.image_size, case.image_size)
    labels = torch.randint(0, 1000, (case.samples,))
    return model, Samples(inputs, labels, case.batch_size).to(device)


def problem_for(kind: str, model: nn.Module, samples: Samples, device: torch.device) -> Problem:
    """A quantization (calibrated with max on the samples; ``integer``: evaluated on the integer grid) or sparsity
    problem on every Conv2d/Linear layer, with the extra_args of the embedded default workloads."""
    layers = profile_layers(model, target_layers(model, ["Conv2d", "Linear"], []), samples.inputs[:1])
    if kind in ("quant", "integer"):
        problem = QuantizationProblem(model, layers, load_workload(QUANT_WORKLOAD).spec)
        calibrate(model, problem.quantizers, samples, "max", "percentile", 99.99)
        if kind == "integer":
            problem.evaluate_on_integer_grid()
        return problem
    return SparsityProblem(model, layers, load_workload(SPARSE_WORKLOAD).spec)


def evaluator_for(kind: str, case: Case, device: torch.device) -> Evaluator:
    """An Evaluator (the one scoring path of qsx-batch) of a fresh copy of the case's network."""
    model, samples = case_inputs(case, device)
    expose_attention(model)  # as load_model does for a search: attention projections as layers
    return Evaluator(problem_for(kind, model, samples, device), {"exploration": samples}, device)


# -- timing --------------------------------------------------------------------------------------------------------
def fp32_seconds(model: nn.Module, samples: Samples) -> float:
    """Plain inference of the unmodified network over the samples, counting correct predictions."""
    start = time.perf_counter()
    correct = torch.zeros((), dtype=torch.long, device=samples.labels.device)
    with torch.inference_mode():
        for inputs, labels in samples.batches():
            correct += (model(inputs).argmax(1) == labels).sum()
    int(correct)
    return time.perf_counter() - start


def eval_seconds(evaluator: Evaluator, genome: np.ndarray) -> float:
    """Wall time of ``Evaluator.evaluate`` (configure + forward + counts) for one genome."""
    start = time.perf_counter()
    result = evaluator.evaluate(genome)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"benchmark individual failed: {result.error}")
    return seconds


def random_genome(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    lo, hi = problem.bounds
    return rng.integers(lo.astype(int), hi.astype(int) + 1).astype(float)


def ratio_case(case: Case, rounds: int, device: torch.device) -> dict:
    """Median ratios quant_eval/fp32_infer, sparse_eval/fp32_infer and integer_eval/fp32_infer (quantization on
    the integer grid, ``gpu_math: integer``) over interleaved rounds."""
    model, samples = case_inputs(case, device)
    evaluators = {kind: evaluator_for(kind, case, device) for kind in EVALUATED}
    rng = np.random.default_rng(0)
    timers = {"fp32": lambda: fp32_seconds(model, samples)}
    timers.update({kind: lambda e=e: eval_seconds(e, random_genome(e.problem, rng)) for kind, e in evaluators.items()})
    for timer in timers.values():  # warm-up: first-call allocations and kernel selection
        timer()
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    order = list(timers)
    for r in range(rounds):
        for name in order[r % len(order):] + order[: r % len(order)]:
            seconds[name].append(timers[name]())
    ratios = {kind: statistics.median(np.divide(seconds[kind], seconds["fp32"])) for kind in EVALUATED}
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "case": case.name, "samples": case.samples, "batch_size": case.batch_size, "rounds": rounds,
        **{f"{name}_seconds": value for name, value in medians.items()},
        **{f"{name}_images_per_second": case.samples / value for name, value in medians.items()},
        **{f"{kind}_eval/fp32_infer": value for kind, value in ratios.items()},
        "targets": targets(case, device),
    }


def targets(case: Case, device: torch.device) -> dict:
    """The ratio targets of ``case`` on ``device`` (docs/performance.md)."""
    if device.type == "cpu":
        return TARGETS
    return GPU_TARGETS["lenet5" if case.model == "lenet5" else "other"]


def gpu_agreement(cases: list[Case], device: torch.device) -> dict:
    """:func:`cpu_agreement` of LeNet-5 and ResNet-18 at 32x32 under each ``exploration.gpu_math`` choice (integer:
    the quantization problem on the integer grid)."""
    chosen = [c for c in cases if c.model == "lenet5"][:1] + [c for c in cases if c.name.startswith("resnet18_32")]
    found = {}
    for math_, kinds in (("tf32", ("quant", "sparse")), ("strict", ("quant", "sparse")), ("integer", ("integer",))):
        set_gpu_math(math_)
        for case in chosen:
            for kind in kinds:
                found[f"{case.name} {kind} {math_}"] = cpu_agreement(kind, case, device)
    set_gpu_math("tf32")  # the workloads' default
    return found


def cpu_agreement(kind: str, case: Case, device: torch.device, genomes: int = 4) -> int:
    """The largest difference in correct predictions between ``device`` and the CPU over the fp32 network and
    a few random genomes (the issue asks for at most one sample); the CPU's quantization is the fake-quantized one,
    pytorch-quantization's numbers, for ``integer`` too."""
    here = evaluator_for(kind, case, device)
    cpu = evaluator_for("quant" if kind == "integer" else kind, case, torch.device("cpu"))
    rng = np.random.default_rng(1)
    chosen = [None] + [random_genome(here.problem, rng) for _ in range(genomes)]
    return max(abs(here.evaluate(g).correct - cpu.evaluate(g).correct) for g in chosen)


# -- end to end ----------------------------------------------------------------------------------------------------
def workload_copy(source: Path, folder: Path, generations: int | None) -> Path:
    """An embedded workload rewritten into ``folder``: absolute weights path, results under ``folder``, and
    ``generations`` in place of its own when given."""
    data = yaml.safe_load(source.read_text())
    spec = data["workload"]
    spec["model"]["weights"] = str((source.parent / spec["model"]["weights"]).resolve())
    spec["results"] = str(folder / "results")
    if generations:
        spec["exploration"]["nsga"]["generations"] = generations
    path = folder / source.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_command(command: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command (in ``env``, default ours) to its end and return its wall seconds; it is interrupted with us
    (Ctrl-C or SIGTERM)."""
    start = time.perf_counter()
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _, errors = proc.communicate()
        except BaseException:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{errors[-2000:]}")
    return time.perf_counter() - start


def explore_run(source: Path, folder: Path, generations: int | None, device: torch.device,
                threads: int | None) -> dict:
    """``qsx-batch explore`` of an embedded workload in a fresh process (calibration included), its results
    file, and what the file costs per individual beyond its header."""
    path = workload_copy(source, folder, generations)
    output = folder / f"{source.stem}.h5"
    seconds = run_command([sys.executable, "-m", "qsx_batch.cli", "explore", str(path), "--output", str(output),
                           "--device", device.type, *(["--threads", str(threads)] if threads else [])])
    workload = load_workload(path)
    problem = build_problem(workload, device)
    create_results(folder / f"{source.stem}-header.h5", run_header(workload, problem, ["classification_accuracy"])).close()
    header = (folder / f"{source.stem}-header.h5").stat().st_size
    with h5py.File(output, "r", swmr=True) as f:
        individuals = int(f["individuals/count"][()])
        baseline = int(f["baseline/count"][()])
        eval_seconds = f["individuals/eval_seconds"][:individuals]
        finished = f["individuals/finished_at"][:individuals]
    size = output.stat().st_size
    return {
        "workload": source.name, "generations": workload.spec.exploration.nsga.generations, "seconds": seconds,
        "individuals": individuals, "baseline_rows": baseline,
        "evaluations_per_second": (individuals + baseline) / seconds, "mean_eval_seconds": float(np.mean(eval_seconds)),
        "search_store_seconds_per_individual": float(finished[-1] - finished[0] - np.sum(eval_seconds[1:])) / (individuals - 1),
        "h5_bytes": size, "h5_header_bytes": header, "h5_bytes_per_individual": (size - header) / individuals,
        "cache_hit_seconds": cache_hit_seconds(workload, problem, output, device),
        "store_append_seconds": store_append_seconds(output, 1),
        "store_generation_seconds": store_append_seconds(output, workload.spec.exploration.nsga.offsprings
                                                         or workload.spec.exploration.nsga.pop_size),
    }


def cache_hit_seconds(workload: Workload, problem: Problem, results: Path, device: torch.device) -> float:
    """Seconds per genome for the search to score genomes that the results file already holds."""
    writer = open_for_append(results)
    try:
        search = Search(workload, problem, LocalExecutor(Evaluator(problem, {}, device)), writer, SearchOptions())
        genomes = writer.read("individuals")["genome"]
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            search.evaluate_generation(genomes, generation=0)
            best = min(best, time.perf_counter() - start)
        return best / len(genomes)
    finally:
        writer.close()


def store_append_seconds(results: Path, batch: int, rows: int = 256) -> float:
    """Seconds per individual to append and commit rows to a copy of a finished results file (its stored rows
    appended again), committed ``batch`` rows at a time (1: a row per commit, as for slow evaluations)."""
    copy = results.with_name(results.stem + "-append.h5")
    shutil.copy(results, copy)
    writer = open_for_append(copy)
    try:
        table = writer.read("individuals")
        fields = [f.name for f in dataclasses.fields(IndividualResult) if f.name in table]
        stored = [IndividualResult(**{name: table[name][i] for name in fields}) for i in range(len(table["genome"]))]
        start = time.perf_counter()
        for i in range(rows):
            writer.append_individual(stored[i % len(stored)], generation=0, fitness=(0.0, 0.0), constraint=0.0)
            if (i + 1) % batch == 0:
                writer.commit()
        writer.commit()
        return (time.perf_counter() - start) / rows
    finally:
        writer.close()
        copy.unlink()


# -- report --------------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict:
    """What the figures were measured on."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "load_average_1min": os.getloadavg()[0],
    }


def print_table(report: dict) -> None:
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"device {m['device']} {m['gpu']}".rstrip())
    print(f"{'case':<22}{'N':>6}{'fp32 s':>10}{'fp32 img/s':>12}{'quant s':>10}{'quant/fp32':>12}{'sparse s':>10}"
          f"{'sparse/fp32':>13}{'integer/fp32':>14}{'targets':>12}")
    for row in report["ratios"]:
        t = row["targets"]
        print(f"{row['case']:<22}{row['samples']:>6}{row['fp32_seconds']:>10.4f}{row['fp32_images_per_second']:>12.0f}"
              f"{row['quant_seconds']:>10.4f}{row['quant_eval/fp32_infer']:>12.2f}{row['sparse_seconds']:>10.4f}"
              f"{row['sparse_eval/fp32_infer']:>13.2f}{row['integer_eval/fp32_infer']:>14.2f}"
              f"{t['quant']:>6} {t['sparse']:<5}")
    if report["fused"]:
        print(f"fused kernels: {report['fused']}")
    for name, run in report["explore"].items():
        print(f"explore {name:<6}: {run['seconds']:.1f} s for {run['generations']} generations, {run['individuals']} "
              f"individuals + {run['baseline_rows']} baseline, {run['evaluations_per_second']:.1f} evaluations/s, "
              f"mean eval {run['mean_eval_seconds'] * 1e3:.1f} ms + search/store "
              f"{run['search_store_seconds_per_individual'] * 1e3:.2f} ms per individual "
              f"(target {SEARCH_STORE_TARGET * 1e3:g}), "
              f"{run['h5_bytes_per_individual']:.0f} h5 bytes/individual (header {run['h5_header_bytes']} bytes), "
              f"cache hit {run['cache_hit_seconds'] * 1e6:.1f} us/genome, "
              f"store {run['store_append_seconds'] * 1e3:.2f} ms/row committed alone, "
              f"{run['store_generation_seconds'] * 1e3:.2f} ms/row committed by generation")
    for case, diff in report.get("cpu_agreement", {}).items():
        print(f"{report['machine']['device']} vs cpu, {case}: correct predictions differ by at most {diff} samples")
    print("launcher overhead per generation: python bench/launcher_overhead.py (SLURM cluster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"fewer samples and rounds, {QUICK_GENERATIONS} generations per explore run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads here and in the explore runs (default 1: stable on a shared machine; "
                             "0: torch's choice here, qsx-batch's own default in the explore runs)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per case (default 5, --quick 3)")
    parser.add_argument("--json", metavar="FILE", help="write the figures and the machine as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the explore child too (see run_command)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rounds = args.rounds or (3 if args.quick else 5)
    command = " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict = {"command": command, "quick": args.quick,
                    "machine": machine(device), "ratios": [], "explore": {}}
    cases = QUICK_CASES if args.quick else GPU_CASES if device.type == "cuda" else FULL_CASES
    for case in cases:
        report["ratios"].append(ratio_case(case, rounds, device))
        print(f"measured {case.name}", file=sys.stderr)
    report["fused"] = {name: f.failure or "compiled" for name, f in
                       (("fake_quant", FUSED_FAKE_QUANT), ("grid", FUSED_GRID), ("sparsify", FUSED_SPARSIFY))
                       if f.compiled is not None}
    if device.type != "cpu":
        report["cpu_agreement"] = gpu_agreement(cases, device)
    generations = QUICK_GENERATIONS if args.quick else None
    with tempfile.TemporaryDirectory(prefix="qsx-bench-") as tmp:
        for name, workload in (("quant", QUANT_WORKLOAD), ("sparse", SPARSE_WORKLOAD)):
            report["explore"][name] = explore_run(workload, Path(tmp), generations, device, args.threads)
            print(f"ran explore {name}", file=sys.stderr)
    quant_run = report["explore"]["quant"]
    report["explore_default_seconds"] = quant_run["seconds"]
    report["explore_default_generations"] = quant_run["generations"]
    report["evaluations_per_second"] = quant_run["evaluations_per_second"]
    report["cache_hit_seconds"] = quant_run["cache_hit_seconds"]
    report["store_append_seconds"] = quant_run["store_append_seconds"]
    report["h5_bytes_per_individual"] = {k: v["h5_bytes_per_individual"] for k, v in report["explore"].items()}
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

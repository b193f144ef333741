"""The ``qsx-batch`` command line: one subcommand per task, user mistakes reported without tracebacks."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from . import __version__, blocks, energy_table, inspect_cmd, launch, plots, reevaluate, retrain
from .errors import UserError
from .interrupts import Interrupted, stop_requests


def _workload_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", nargs="?", help="workload YAML file (default: the embedded LeNet-5/MNIST quantization)")


def _load(args) -> "Workload":  # noqa: F821
    from .workload import load_workload

    return load_workload(args.workload)


def workload_for_run(args):
    """The workload of a new run, or of the results file given to --resume."""
    from .search import stored_workload_text
    from .workload import load_workload, parse_workload

    if args.resume and not args.workload:
        from .store import open_for_reading

        with open_for_reading(args.resume) as f:
            anchor = Path(str(f.attrs.get("workload_path", args.resume)))
        return parse_workload(stored_workload_text(args.resume), anchor)
    return load_workload(args.workload)


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_validate(args) -> int:
    from .data import dataset_size
    from .models import check_model_type
    from .problems import problem_class
    from .problems.costs import COST_FUNCTIONS
    from .workload import dump_workload

    workload = _load(args)
    spec = workload.spec
    problem_class(spec.problem.problem_function)
    check_model_type(spec.model.type)
    if spec.model.weights and not workload.input_path(spec.model.weights).is_file():
        raise UserError(f"Workload {workload.path}: model.weights {workload.input_path(spec.model.weights)} does not exist.")
    if spec.exploration.extra_args.bit_weighting_function not in COST_FUNCTIONS:
        raise UserError(f"Unknown exploration.extra_args.bit_weighting_function "
                        f"'{spec.exploration.extra_args.bit_weighting_function}'. Valid names: {', '.join(COST_FUNCTIONS)}.")
    dataset_blocks = [("exploration.datasets.exploration", spec.exploration.datasets.exploration),
                      ("exploration.datasets.baseline", spec.exploration.datasets.baseline)]
    if spec.calibration:
        dataset_blocks.append(("calibration.datasets.calibrate", spec.calibration.datasets.calibrate))
    for key, block in dataset_blocks:
        if block is not None:
            root = workload.input_path(block.path) if block.path else None
            dataset_size(block, root, key)
    print(dump_workload(workload), end="")
    print(f"# {workload.path}: valid", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    from .evaluate import build_problem, ensure_calibration, workload_device
    from .problems import QuantizationProblem

    workload = _load(args)
    device = workload_device(workload, args.device)
    problem = build_problem(workload, device, calibrate=False)
    if not isinstance(problem, QuantizationProblem):
        raise UserError(f"Workload {workload.path}: only quantization problems are calibrated.")
    path, computed = ensure_calibration(workload, problem, device, force=args.force)
    if computed:
        print(f"calibrated {len(problem.quantizers)} quantizers -> {path}")
    else:
        print(f"calibration file {path} exists and fits this workload; use --force to redo it")
    return 0


def cmd_train(args) -> int:
    from .train import train_weights

    workload = _load(args)
    output = Path(args.output) if args.output else (
        workload.input_path(workload.spec.model.weights) if workload.spec.model.weights else None)
    if output is None:
        raise UserError("Say where to save the weights: --output FILE (or set model.weights in the workload).")
    reports, held_out = train_weights(
        workload, output, on_epoch=lambda r: print(f"epoch {r.epoch:>3}: loss {r.loss:.4f}  validation accuracy {r.accuracy:.4f}"))
    print(f"held-out accuracy {held_out:.4f}; weights -> {output}")
    return 0


def cmd_explore(args) -> int:
    from .evaluate import prepare_evaluator, workload_device
    from .executors import LocalExecutor
    from .search import open_run

    workload = workload_for_run(args)
    device = workload_device(workload, args.device)
    evaluator = prepare_evaluator(workload, device)
    writer = open_run(workload, evaluator.problem, Path(args.output) if args.output else None,
                      Path(args.resume) if args.resume else None)
    print(f"results -> {writer.path}", file=sys.stderr)
    return run_search(workload, evaluator.problem, LocalExecutor(evaluator), writer, args, "explore")


def run_search(workload, problem, executor, writer, args, command: str) -> int:
    """Run the search; on any stop the results file is closed cleanly and the resume command printed."""
    from .search import Search, SearchOptions

    options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose)
    resume_hint = f"qsx-batch {command} --resume {writer.path}"
    try:
        Search(workload, problem, executor, writer, options).run()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); every finished individual is stored in {writer.path}.\n"
              f"resume with: {resume_hint}", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space" in str(exc):
            raise UserError(f"The disk holding {writer.path} is full. Individuals finished before are stored; "
                            f"free space and resume with: {resume_hint}") from None
        raise
    finally:
        executor.close()
        writer.close()
    print(f"done: {writer.path}\ninspect with: qsx-batch inspect {writer.path}")
    return 0


# -- parser ------------------------------------------------------------------------------------------------------
def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", metavar="FILE", help="results file to create (default: RESULTS/<name>-<time>.h5)")
    p.add_argument("--resume", metavar="RESULTS.h5", help="continue the run stored in this results file")
    p.add_argument("--skip-baseline", action="store_true", help="do not evaluate the fp32 / all-upper-limit baseline")
    p.add_argument("--progress", action="store_true", help="show progress bars for generations and individuals")
    p.add_argument("--verbose", "-v", action="store_true", help="print every evaluated individual")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override exploration.device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsx-batch",
        description="Search per-layer quantization bit widths or activation-sparsity thresholds of a PyTorch "
                    "network with NSGA-II; results stream into one HDF5 file.",
    )
    parser.add_argument("--version", action="version", version=f"qsx-batch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("explore", help="run an exploration on this machine")
    _workload_arg(p)
    add_run_options(p)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("validate", help="check a workload file and print it with defaults filled in")
    _workload_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("calibrate", help="compute and save amax of every quantizer (calibration.file)")
    _workload_arg(p)
    p.add_argument("--force", action="store_true", help="recalibrate even if the calibration file exists")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override exploration.device")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train", help="train the model's fp32 weights from the workload's 'training' section")
    _workload_arg(p)
    p.add_argument("--output", "-o", metavar="FILE", help="weights file to write (default: model.weights)")
    p.set_defaults(func=cmd_train)

    inspect_cmd.register(sub)
    plots.register(sub)
    reevaluate.register(sub)
    retrain.register(sub)
    blocks.register(sub)
    energy_table.register(sub)
    launch.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with stop_requests():
            return args.func(args)
    except UserError as exc:
        print(f"qsx-batch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print(f"\nqsx-batch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``qsx-batch calibrate``: compute and save the amax of every quantizer (``calibration.file``)."""

from __future__ import annotations

import argparse

from .options import add_device, add_workload

NAME = "calibrate"
HELP = "compute and save amax of every quantizer (calibration.file)"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    p.add_argument("--force", action="store_true", help="recalibrate even if the calibration file exists")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..workload import load_workload

    workload = load_workload(args.workload)
    from ..evaluation.assembly import build_problem, ensure_calibration, workload_device  # torch: once it loaded

    device = workload_device(workload, args.device)
    problem = build_problem(workload, device, calibrate=False)
    if not problem.needs_calibration:
        raise UserError(f"Workload {workload.path}: only quantization problems are calibrated.")
    path, computed = ensure_calibration(workload, problem, device, force=args.force)
    if computed:
        print(f"calibrated {len(problem.quantizers)} quantizers -> {path}")
    else:
        print(f"calibration file {path} exists and fits this workload; use --force to redo it")
    return 0

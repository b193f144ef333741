"""``qsx-batch blocks``: per layer, how many blocks its input has and how many are already zero."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device, add_workload

NAME = "blocks"
HELP = "per layer: blocks of block_size in its input, and blocks already zero"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    p.add_argument("--block-size", type=int, metavar="B", help="override exploration.extra_args.block_size")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..results.report import write_csv
    from ..workload import load_workload

    if args.block_size is not None and args.block_size < 1:
        raise UserError(f"--block-size {args.block_size}: a block is at least 1 element wide.")
    workload = load_workload(args.workload)
    from ..evaluation.assembly import workload_device  # torch: once the workload loaded
    from ..tools.sparsity_tiles import block_stats, stats_text

    device = workload_device(workload, args.device)
    stats = block_stats(workload, device, args.block_size)
    print(stats_text(stats))
    if args.csv:
        write_csv(stats.rows(), Path(args.csv))
        print(f"wrote {len(stats.layers)} layers -> {args.csv}")
    return 0

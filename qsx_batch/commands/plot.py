"""``qsx-batch plot``: figures of a results file (PNG, PDF, SVG), drawn by :mod:`qsx_batch.results.plots`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_results, results_path

NAME = "plot"
HELP = "draw Pareto, per-layer front and hypervolume figures of a results file"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_results(p)
    p.add_argument("--out", metavar="DIR",
                   help="folder for the figures (default: <results stem>-plots beside the file)")
    p.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=["png", "pdf"],
                   help="file formats (default: png pdf)")
    p.add_argument("--max-lines", type=int, default=10, metavar="N",
                   help="front individuals drawn in the per-layer figures (default 10, spread along the front)")


def run(args: argparse.Namespace) -> int:
    from .. import results
    from ..errors import UserError
    from ..results.plots import plot_run

    run = results.open(results_path(args.results))
    out = Path(args.out) if args.out else run.path.with_name(run.path.stem + "-plots")
    try:
        paths = plot_run(run, out, args.formats, args.max_lines)
    except OSError as exc:
        raise UserError(f"Cannot write plots into {out}: {exc}.") from None
    if not len(run.pareto()):
        print("no usable individual yet: the per-layer front figure is left out")
    for path in paths:
        print(path)
    return 0

"""``qsx-batch inspect``: summary, chosen individuals, hypervolume per generation, and exports of a results file."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_choice, add_results, results_path

NAME = "inspect"
HELP = "summarize a results file (also while a run writes it); choose and export individuals"
DESCRIPTION = ("Without choice options: summary, baseline and Pareto front, exports of every individual. With "
               "them: the chosen individuals, and exports of just those.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_results(p)
    add_choice(p)
    p.add_argument("--hypervolume", action="store_true", help="print the hypervolume of every generation")
    p.add_argument("--sensitivity", action="store_true",
                   help="print the sensitivity sweep (accuracy per gene and value; see 'qsx-batch sensitivity')")
    p.add_argument("--energy", action="store_true",
                   help="add estimated DRAM energy per inference (quantization runs; model of docs/analysis.md)")
    p.add_argument("--csv", metavar="FILE", help="export the individuals as CSV")
    p.add_argument("--json", metavar="FILE", help="export the individuals as JSON")
    p.add_argument("--tikz", metavar="FILE", help="export pgfplots coordinates (individuals and Pareto front)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import results
    from ..results.report import (
        follow_up_text,
        generations_text,
        individuals_text,
        sensitivity_text,
        summary_text,
        table_rows,
        write_csv,
        write_json,
        write_tikz,
    )
    from ..results.selection import has_choice, selected_rows

    run = results.open(results_path(args.results))
    chosen = has_choice(args)
    rows = selected_rows(run, args) if chosen else run.pareto()
    energy = None
    if args.energy:
        from ..tools.dram_energy import run_energy

        energy = run_energy(run)
    print(summary_text(run))
    print("\n" + individuals_text(run, rows, "selected" if chosen else "Pareto front", energy))
    if args.hypervolume:
        print("\n" + generations_text(run))
    if args.sensitivity:
        print("\n" + sensitivity_text(run))
    follow_ups = follow_up_text(run)
    if follow_ups:
        print("\n" + follow_ups)
    exported = rows if chosen else np.arange(run.count)
    for option, write in (("csv", write_csv), ("json", write_json)):
        target = getattr(args, option)
        if target:
            write(table_rows(run, exported, energy), Path(target))
            print(f"\nwrote {len(exported)} individuals -> {target}")
    if args.tikz:
        write_tikz(run, exported, Path(args.tikz))
        print(f"\nwrote pgfplots coordinates of {len(exported)} individuals and their Pareto front -> {args.tikz}")
    return 0

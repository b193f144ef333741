"""``qsx-batch energy``: the per-layer DRAM transfer and energy table of a workload (CSV).

The written CSV has the columns an ``energy.table`` needs (``layer``, ``weight_reads``, ``input_reads``,
``output_writes``), so it doubles as a template to fill with an accelerator model's numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_threads, add_workload

NAME = "energy"
HELP = "write the per-layer DRAM transfer and energy table of a workload (CSV)"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    p.add_argument("--bits", type=int, metavar="B",
                   help="bit width of every input and weight (default: exploration.extra_args.num_bits_upper_limit)")
    p.add_argument("--output", "-o", metavar="FILE", help="CSV to write (default: RESULTS/<name>.energy.csv)")
    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from ..workload import load_workload

    workload = load_workload(args.workload)
    from ..tools.dram_energy import write_energy_table  # torch: once the workload loaded

    model, rows, bits, output = write_energy_table(workload, args.bits, Path(args.output) if args.output else None)
    energy = workload.spec.exploration.extra_args.energy
    print(f"DRAM transfers and energy per inference at {bits} bits ({model.source}, "
          f"{energy.pj_per_access:g} pJ per {energy.access_bits}-bit access)")
    print(f"  {'layer':<16}{'weight_reads':>14}{'input_reads':>14}{'output_writes':>15}{'energy_uJ':>12}")
    for r in rows:
        print(f"  {r['layer']:<16}{r['weight_reads']:>14.0f}{r['input_reads']:>14.0f}{r['output_writes']:>15.0f}"
              f"{r['energy_uj']:>12.4f}")
    print(f"  {'total':<16}{'':>43}{sum(r['energy_uj'] for r in rows):>12.4f}\nwrote {output}")
    return 0

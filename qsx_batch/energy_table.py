"""``qsx-batch energy``: the per-layer DRAM transfer and energy table of a workload, and energy per stored individual.

The written CSV has the columns an ``energy.table`` needs (``layer``, ``weight_reads``, ``input_reads``,
``output_writes``), so it doubles as a template to fill with an accelerator model's numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .errors import UserError


def workload_energy_model(workload) -> "EnergyModel":  # noqa: F821
    """The workload's energy model (its ``energy`` settings) on the model's target layers; no calibration needed."""
    import torch

    from .evaluate import build_problem
    from .problems.energy import EnergyAwareQuantProblem, EnergyModel, layer_tensors

    problem = build_problem(workload, torch.device("cpu"), calibrate=False)
    if isinstance(problem, EnergyAwareQuantProblem):
        return problem.energy
    return EnergyModel(layer_tensors(problem.model, problem.layers), workload.spec.exploration.extra_args.energy)


def run_energy(run) -> np.ndarray:
    """DRAM energy per inference [uJ] of every individual of a quantization run (NaN where evaluation failed)."""
    from .followup import run_workload
    from .problems.energy import EnergyAwareQuantProblem

    ind = run.individuals
    if run.attrs["problem"] == EnergyAwareQuantProblem.name:
        return np.where(ind["status"] == "ok", ind["cost"], np.nan)
    if not run.bits:
        raise UserError(f"Energy needs bit widths; {run.path} is a {run.attrs['problem']} run.")
    model = workload_energy_model(run_workload(run.path, None))
    columns = run.param_columns()
    return np.array([model.energy_uj(p[columns["input_bits"]], p[columns["weight_bits"]]) if s == "ok" else np.nan
                     for p, s in zip(ind["params"], ind["status"])])


def cmd_energy(args: argparse.Namespace) -> int:
    from .report import write_csv
    from .workload import load_workload

    workload = load_workload(args.workload)
    extra = workload.spec.exploration.extra_args
    bits = args.bits if args.bits is not None else extra.num_bits_upper_limit
    if not 1 <= bits <= 32:
        raise UserError(f"--bits {bits}: give a bit width from 1 to 32.")
    model = workload_energy_model(workload)
    n = len(model.tensors)
    rows = model.rows(np.full(n, bits), np.full(n, bits))
    output = Path(args.output) if args.output else workload.results_dir() / f"{workload.name}.energy.csv"
    try:
        write_csv(rows, output)
    except OSError as exc:
        raise UserError(f"Cannot write the energy table {output}: {exc}.") from None
    print(f"DRAM transfers and energy per inference at {bits} bits ({model.source}, "
          f"{extra.energy.pj_per_access:g} pJ per {extra.energy.access_bits}-bit access)")
    print(f"  {'layer':<16}{'weight_reads':>14}{'input_reads':>14}{'output_writes':>15}{'energy_uJ':>12}")
    for r in rows:
        print(f"  {r['layer']:<16}{r['weight_reads']:>14.0f}{r['input_reads']:>14.0f}{r['output_writes']:>15.0f}"
              f"{r['energy_uj']:>12.4f}")
    print(f"  {'total':<16}{'':>43}{sum(r['energy_uj'] for r in rows):>12.4f}\nwrote {output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``energy`` subcommand."""
    p = sub.add_parser("energy", help="write the per-layer DRAM transfer and energy table of a workload (CSV)")
    p.add_argument("workload", nargs="?", help="workload YAML file (default: the embedded LeNet-5/MNIST workload)")
    p.add_argument("--bits", type=int, metavar="B",
                   help="bit width of every input and weight (default: exploration.extra_args.num_bits_upper_limit)")
    p.add_argument("--output", "-o", metavar="FILE", help="CSV to write (default: RESULTS/<name>.energy.csv)")
    p.set_defaults(func=cmd_energy)

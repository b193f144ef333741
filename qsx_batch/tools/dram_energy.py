"""Estimated DRAM energy per inference: the per-layer table of a workload, and the energy of stored individuals
(model and settings: :mod:`qsx_batch.problems.energy`, docs/analysis.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..evaluation.assembly import profile_model
from ..evaluation.record import Status
from ..problems.energy import EnergyAwareQuantProblem, EnergyModel, energy_model, layer_tensors
from ..results import Run
from ..results.report import write_csv
from ..workload import Workload


def workload_energy_model(workload: Workload) -> EnergyModel:
    """The workload's energy model (its ``energy`` settings) on the model's target layers; no calibration needed."""
    model, layers = profile_model(workload, torch.device("cpu"))
    return energy_model(workload.spec, layer_tensors(model, layers))


def write_energy_table(workload: Workload, bits: int | None, output: Path | None) -> tuple[EnergyModel, list[dict],
                                                                                          int, Path]:
    """Write the workload's per-layer table at ``bits`` for every input and weight (default: the upper bit width)
    as CSV (default: ``<results>/<name>.energy.csv``); returns the model, the rows, the bits and the file."""
    bits = workload.spec.exploration.extra_args.num_bits_upper_limit if bits is None else bits
    if not 1 <= bits <= 32:
        raise UserError(f"--bits {bits}: give a bit width from 1 to 32.")
    model = workload_energy_model(workload)
    n = len(model.tensors)
    rows = model.rows(np.full(n, bits), np.full(n, bits))
    output = output or workload.results_dir() / f"{workload.name}.energy.csv"
    try:
        write_csv(rows, output)
    except OSError as exc:
        raise UserError(f"Cannot write the energy table {output}: {exc}.") from None
    return model, rows, bits, output


def run_energy(run: Run) -> np.ndarray:
    """DRAM energy per inference [uJ] of every individual of a quantization run (NaN where evaluation failed)."""
    ind = run.individuals
    if run.header.problem == EnergyAwareQuantProblem.name:
        return np.where(ind["status"] == Status.OK, ind["cost"], np.nan)
    if not run.bits:
        raise UserError(f"Energy needs bit widths; {run.path} is a {run.header.problem} run.")
    model = workload_energy_model(run.workload)
    columns = run.param_columns()
    return np.array([model.energy_uj(p[columns["input_bits"]], p[columns["weight_bits"]]) if s == Status.OK else np.nan
                     for p, s in zip(ind["params"], ind["status"])])

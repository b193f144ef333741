"""Estimated DRAM energy per inference: the per-layer table of a workload, and the energy of stored individuals
(model and settings: :mod:`qsx_batch.problems.energy`, docs/analysis.md)."""

from __future__ import annotations

import numpy as np
import torch

from .errors import UserError
from .prepare import profile_model
from .problems.energy import EnergyAwareQuantProblem, EnergyModel, energy_model, layer_tensors
from .result import Status
from .results import Run
from .workload import Workload


def workload_energy_model(workload: Workload) -> EnergyModel:
    """The workload's energy model (its ``energy`` settings) on the model's target layers; no calibration needed."""
    model, layers = profile_model(workload, torch.device("cpu"))
    return energy_model(workload.spec, layer_tensors(model, layers))


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

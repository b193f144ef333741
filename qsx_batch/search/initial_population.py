"""Individuals a workload puts into NSGA-II's first generation itself, besides pymoo's random ones (as Optuna's
``enqueue_trial``): ``exploration.predefined_parameters`` (one value in every gene, the reference tool's key) and
``exploration.initial_population`` as a list of individuals or a CSV file of parameters. The sensitivity-derived
individuals of ``initial_population: sensitivity`` come from :mod:`qsx_batch.search.sensitivity`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..problems import Problem
from ..workload import INITIAL_POPULATION_KINDS, WorkloadSpec


def read_parameter_csv(path: Path, gene_names: list[str]) -> list[np.ndarray]:
    """Per CSV row, the parameters of the columns named by ``gene_names`` (other columns are ignored; rows
    without parameters, such as failed individuals exported by ``inspect --csv``, are skipped)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [name for name in gene_names if name not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"exploration.initial_population: {path} has no column for gene(s) "
                                f"{', '.join(missing)}; it needs one column per gene name ({', '.join(gene_names)}), "
                                "as 'qsx-batch inspect --csv' writes them.")
            rows = []
            for number, record in enumerate(reader, start=2):
                cells = [record[name].strip() for name in gene_names]
                if all(cell in ("", "nan", "NaN") for cell in cells):
                    continue
                try:
                    rows.append(np.array([float(cell) for cell in cells]))
                except ValueError:
                    raise UserError(f"exploration.initial_population: {path} line {number}: every gene column needs "
                                    f"a number, got {', '.join(cells)}.") from None
            return rows
    except OSError as exc:
        raise UserError(f"exploration.initial_population: cannot read {path} ({exc.strerror or exc}).") from None


def new_run_start(workload: WorkloadSpec, problem: Problem) -> str:
    """How a new run seeds generation 0, stored with it (a resumed run keeps it): ``sensitivity``, ``random``
    or ``listed`` (a list or CSV file); ``auto`` is the problem's ``default_start``."""
    source = workload.exploration.initial_population
    if source == "auto":
        return problem.default_start
    return source if source in INITIAL_POPULATION_KINDS else "listed"


def run_start(stored: str, workload: WorkloadSpec, problem: Problem) -> str:
    """The start of a run: the one its file stores, else (a file from before ``auto``, when a missing key meant
    random) its workload's, ``auto`` read as random."""
    if stored:
        return stored
    return "random" if workload.exploration.initial_population == "auto" else new_run_start(workload, problem)


def given_genomes(workload: WorkloadSpec, problem: Problem) -> np.ndarray:
    """The genomes of ``predefined_parameters`` and of an ``initial_population`` list or CSV file (resolved
    against the workload file's folder), in that order."""
    spec = workload.exploration
    genomes = [problem.uniform_genome(value) for value in spec.predefined_parameters]
    source = spec.initial_population
    if source not in INITIAL_POPULATION_KINDS:
        n = len(problem.gene_names)
        path = workload.input_path(source) if isinstance(source, str) else None
        listed = read_parameter_csv(path, problem.gene_names) if path else source
        where = str(path) if path else "exploration.initial_population"
        for number, params in enumerate(listed):
            if len(params) != n:
                raise UserError(f"{where}: individual {number} has {len(params)} parameters; give one per gene "
                                f"({n}: {', '.join(problem.gene_names)}).")
            genomes.append(problem.encode(np.asarray(params, dtype=float), f"{where} individual {number}"))
    return np.array(genomes, dtype=float).reshape(-1, len(problem.gene_names))

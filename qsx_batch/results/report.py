"""Text tables and exports (CSV, JSON, pgfplots coordinates) of a results file (``qsx-batch inspect``)."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from ..evaluation.record import Status
from ..store.format import SENSITIVITY
from . import Run
from .pareto import REFERENCE_POINT

if TYPE_CHECKING:
    from ..workload import Workload


def format_params(values: np.ndarray, bits: bool) -> str:
    """Bit widths as integers, thresholds with three significant digits."""
    return " ".join(f"{v:g}" if bits else f"{v:.3g}" for v in values)


def summary_text(run: Run) -> str:
    """Run summary and baseline as aligned text."""
    h, ind = run.header, run.individuals
    workload = _stored_workload(run)
    failed = int(np.sum(ind["status"] != Status.OK)) if run.count else 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created))
    lines = [
        f"results    {run.path}",
        f"workload   {h.workload_name}  (sha256 {h.workload_sha256[:12]})",
        f"problem    {h.problem}   cost: {run.cost_label} ({'minimized' if run.bits else 'maximized'})",
        f"seed       {h.seed}   created {created}",
        f"evaluated  {run.count} individuals ({failed} failed) in {run.generations.rows} generations,"
        f" {float(np.sum(ind['eval_seconds'])) if run.count else 0.0:.1f} s of evaluation",
    ]
    if not np.isnan(run.minimum_accuracy):
        lines.append(f"constraint accuracy >= {run.minimum_accuracy:.4f}")
    lines.append(f"numerics   {_numerics(run, workload)}")
    if run.generations.rows:
        lines.append(f"hypervolume {run.hypervolume()[-1]:.4f} of the last population "
                     f"(normalized, reference point {tuple(REFERENCE_POINT.tolist())}; --hypervolume: per generation)")
    if run.follow_ups:
        tables = ", ".join(f"{name} ({t.rows} rows)" for name, t in run.follow_ups.items())
        lines.append(f"follow-ups {tables}")
    base = run.baseline
    if base.rows:
        named = [_dataset_label(workload, name) for name in base["dataset"]]
        width = max(len(name) for name in named) + 2
        lines += ["", "baseline", f"  {'setting':<14}{'dataset':<{width}}{'accuracy':>9}{'samples':>9}  cost"]
        for i in range(base.rows):
            lines.append(f"  {base['label'][i]:<14}{named[i]:<{width}}{base['accuracy'][i]:>9.4f}"
                         f"{base['samples'][i]:>9}  {base['cost'][i]:.6g}")
    return "\n".join(lines)


def _stored_workload(run: Run) -> Workload | None:
    """The run's workload, parsed once for the summary (None when the file's text no longer loads)."""
    try:
        return run.workload
    except UserError:
        return None


def _numerics(run: Run, workload: Workload | None) -> str:
    """Where the individuals were computed and with which float math (``exploration.gpu_math`` on a GPU)."""
    ind, versions = run.individuals, run.header.versions
    gpus = sorted({str(g) for g in ind["gpu"] if g}) if run.count else []
    built = f"torch {versions.get('torch', '?')}, CUDA {versions.get('cuda', '?')}, cuDNN {versions.get('cudnn', '?')}"
    if not gpus:
        return f"CPU, fp32 ({built})"
    math_ = workload.spec.exploration.gpu_math if workload else "?"
    return f"{', '.join(gpus)}, gpu_math {math_} ({built})"


def _dataset_label(workload: Workload | None, name: str) -> str:
    """The stored dataset name with the data of the run's workload block (the name alone if it has none)."""
    try:
        return workload.dataset_label(name) if workload else name
    except UserError:
        return name


def individuals_text(run: Run, rows: np.ndarray, title: str, energy: np.ndarray | None = None) -> str:
    """One line per individual: row, generation, accuracy, [re-evaluated accuracy], cost, [energy], parameters
    (or the error)."""
    ind = run.individuals
    kinds = run.param_columns()
    header = ("bits per quantizer, then threshold per layer input" if "threshold" in kinds else "bits per quantizer") \
        if run.bits else "threshold per layer input"
    again, dataset = run.reevaluated_accuracy()
    constrained = not np.isnan(run.minimum_accuracy)
    lines = [f"{title} ({len(rows)} individuals; {header}: {' '.join(run.gene_names)})"]
    if dataset:
        lines.append(f"  accuracy: on the exploration data the search chose by; re-evaluated: on {dataset}")
    if constrained:
        lines.append(f"  margin: accuracy minus the bound {run.minimum_accuracy:.6g} (meets it when >= 0)")
    lines.append(f"  {'#':>5} {'gen':>4} {'accuracy':>9}" + (f" {'margin':>8}" if constrained else "")
                 + (f" {'re-evaluated':>12}" if dataset else "")
                 + f" {run.header.cost_name:>20}" + (f" {'energy_uJ':>10}" if energy is not None else "")
                 + "  parameters")
    for row in rows:
        cells = f"  {row:>5} {ind['generation'][row]:>4} {ind['accuracy'][row]:>9.4f}"
        if constrained:
            cells += f" {-ind['constraint'][row]:>+8.4f}"
        if dataset:
            cells += f" {again[row]:>12.4f}" if np.isfinite(again[row]) else f" {'-':>12}"
        cells += f" {ind['cost'][row]:>20.6g}" + (f" {energy[row]:>10.4g}" if energy is not None else "")
        tail = format_params(ind["params"][row], run.bits) if ind["status"][row] == Status.OK else \
            f"[{ind['status'][row]}: {ind['error'][row]}]"
        lines.append(f"{cells}  {tail}")
    return "\n".join(lines)


def generations_text(run: Run) -> str:
    """Per generation: evaluated individuals so far, evaluation time, and both hypervolumes."""
    gens = run.generations
    cumulative = run.cumulative_hypervolume()
    lines = [f"hypervolume per generation (normalized objectives, reference point {tuple(REFERENCE_POINT.tolist())})",
             f"  {'gen':>4} {'evaluated':>10} {'eval_s':>9} {'population':>11} {'all so far':>11}"]
    for g in range(gens.rows):
        lines.append(f"  {g:>4} {gens['evaluated'][g]:>10} {gens['eval_seconds'][g]:>9.1f} "
                     f"{gens['hypervolume'][g]:>11.4f} {cumulative[g]:>11.4f}")
    return "\n".join(lines)


def follow_up_text(run: Run) -> str:
    """Re-evaluations and retraining results stored by ``evaluate`` and ``retrain``."""
    blocks = []
    for name, t in run.follow_ups.items():
        if name == SENSITIVITY:  # its own view: sensitivity_text
            continue
        shown = ("individual", "dataset", "epoch", "loss", "accuracy", "samples", "cost", "weights")
        columns = [c for c in shown if c in t]
        cells = [[f"{t[c][i]:.4f}" if isinstance(t[c][i], float) else str(t[c][i]) for c in columns]
                 for i in range(t.rows)]
        widths = [max([len(c)] + [len(r[j]) for r in cells]) for j, c in enumerate(columns)]
        lines = [name] + ["  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in [columns] + cells]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def sensitivity_text(run: Run) -> str:
    """The sensitivity sweep as accuracy tables: one row per gene, one column per parameter value."""
    sweep = run.sensitivity()
    if sweep is None:
        return f"{run.path} holds no sensitivity sweep; make one with: qsx-batch sensitivity --resume {run.path}"
    lines = [f"sensitivity: accuracy with one gene swept, every other gene neutral (reference accuracy "
             f"{sweep.reference_accuracy:.4f}; '-': failed or not evaluated)"]
    width = max(len(name) for name in run.gene_names)
    for params, genes in sweep.groups():
        unit = sweep.axis_label(params, run.bits)
        lines += ["", f"{unit:>{width}}  " + " ".join(f"{p:>8.4g}" for p in params)]
        for gene, accuracy in zip(genes, sweep.grid(params, genes)):
            lines.append(f"{run.gene_names[gene]:>{width}}  "
                         + " ".join(f"{'-':>8}" if np.isnan(a) else f"{a:>8.4f}" for a in accuracy))
    return "\n".join(lines)


SIGNIFICANT_DIGITS = 12  # float columns in CSV and JSON: no binary noise, and more digits than any stored measure


def table_rows(run: Run, rows: np.ndarray, energy: np.ndarray | None = None) -> list[dict]:
    """One flat dict per individual, with the columns the run's problem fills and the stored types: scores (the
    re-evaluated accuracy, NaN where none, when the run has re-evaluations), the accuracy margin over the
    constraint (when the run has one), per-gene parameters (bit widths as integers) and, for runs with thresholds,
    per-layer block counts. An integral cost (bit counts) is an integer."""
    ind, out = run.individuals, []
    again, dataset = run.reevaluated_accuracy()
    kinds = run.param_columns()
    integer_genes = set(kinds.get("input_bits", ())) | set(kinds.get("weight_bits", ()))
    costs = ind["cost"][np.isfinite(ind["cost"])]
    integral_cost = run.bits and bool(np.all(costs == np.round(costs)))
    constrained = not np.isnan(run.minimum_accuracy)

    def number(value: float, integral: bool) -> int | float:
        return int(value) if integral and math.isfinite(value) else float(value)

    for row in rows:
        record = {
            "index": int(row), "generation": int(ind["generation"][row]), "status": ind["status"][row],
            "accuracy": float(ind["accuracy"][row]), "cost": number(ind["cost"][row], integral_cost),
        }
        if constrained:  # stored as the violation (bound minus accuracy); exported as what it means
            record["accuracy_margin"] = -float(ind["constraint"][row])
        record["eval_seconds"] = float(ind["eval_seconds"][row])
        if dataset:
            record["reevaluated_accuracy"] = float(again[row])
        if energy is not None:
            record["energy_uj"] = float(energy[row])
        record.update({name: number(v, i in integer_genes)
                       for i, (name, v) in enumerate(zip(run.gene_names, ind["params"][row]))})
        if "threshold" in kinds:
            for key in ("blocks_already", "blocks_created"):
                record.update({f"{key}:{name}": int(v) for name, v in zip(run.layer_names, ind[key][row])})
        out.append(record)
    return out


def _exported(rows: list[dict], missing: object) -> list[dict]:
    """The records as written: floats to :data:`SIGNIFICANT_DIGITS` significant digits, NaN and infinities
    replaced by ``missing``."""
    def cell(value: object) -> object:
        if not isinstance(value, float):
            return value
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else missing

    return [{key: cell(value) for key, value in row.items()} for row in rows]


def write_csv(rows: list[dict], path: Path) -> None:
    """Write flat records as CSV with a header line; NaN and infinities become empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(_exported(rows, ""))


def write_json(rows: list[dict], path: Path) -> None:
    """Write flat records as a JSON list (valid JSON: NaN and infinities become null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_exported(rows, None), indent=1, allow_nan=False))


def _coordinates(run: Run, rows: np.ndarray, style: str, legend: str) -> str:
    ind = run.individuals
    points = " ".join(f"({ind['cost'][r]:.8g},{ind['accuracy'][r]:.6f})" for r in rows)
    return f"\\addplot[{style}] coordinates {{{points}}};\n\\addlegendentry{{{legend}}}\n"


def write_tikz(run: Run, rows: np.ndarray, path: Path) -> None:
    """pgfplots ``\\addplot coordinates`` for the ok individuals among ``rows`` and their Pareto front.

    ``\\input`` the file inside an ``axis`` environment; x is the cost, y the accuracy (fraction).
    """
    ok = rows[run.individuals["status"][rows] == Status.OK]
    front = run.pareto(ok)
    text = (f"% qsx-batch inspect --tikz: {run.header.workload_name} ({run.header.problem}), {run.path.name}\n"
            f"% x = {run.cost_label}, y = accuracy (fraction of samples)\n"
            "% use inside \\begin{axis}[xlabel={cost}, ylabel={accuracy}] ... \\end{axis}: \\input{this file}\n"
            + _coordinates(run, ok, "only marks, mark=*, mark size=1pt, gray", "individuals")
            + _coordinates(run, front, f"thick, red, mark=square*, mark size=1.5pt, const plot mark {run.front_step}",
                           "Pareto front"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

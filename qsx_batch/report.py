"""Text summaries and CSV exports of a results file (``qsx-batch inspect``)."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analysis import pareto_mask, usable
from .store import check_results_file, open_for_reading, read_strings, read_table


@dataclass
class RunData:
    """Everything a report needs from a results file, read in one go."""

    path: Path
    attrs: dict
    gene_names: list[str]
    layer_names: list[str]
    individuals: dict[str, np.ndarray]
    baseline: dict[str, np.ndarray]
    generations: dict[str, np.ndarray]
    minimum_accuracy: float

    @property
    def count(self) -> int:
        return len(self.individuals["accuracy"])

    def pareto(self) -> np.ndarray:
        """Row indices of the Pareto front of usable individuals, sorted by cost."""
        ind = self.individuals
        mask = pareto_mask(ind["objectives"], bool(self.attrs["maximize_cost"]), usable(ind["constraint"], ind["status"]))
        rows = np.flatnonzero(mask)
        return rows[np.argsort(ind["cost"][rows], kind="stable")]


def load_run(path: Path) -> RunData:
    """Read a results file (also one still being written)."""
    check_results_file(path)
    with open_for_reading(path) as f:
        return RunData(
            path=Path(path), attrs=dict(f.attrs), gene_names=read_strings(f, "genes/names"),
            layer_names=read_strings(f, "layers/names"), individuals=read_table(f, "individuals"),
            baseline=read_table(f, "baseline"), generations=read_table(f, "generations"),
            minimum_accuracy=float(f["run/minimum_accuracy"][0]),
        )


def _format_params(values: np.ndarray, integer_like: bool) -> str:
    return " ".join(f"{v:g}" if integer_like else f"{v:.3g}" for v in values)


def summary_text(run: RunData) -> str:
    """Run summary, baseline and Pareto front as aligned text tables."""
    a, ind = run.attrs, run.individuals
    failed = int(np.sum(ind["status"] != "ok")) if run.count else 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(a["created"])))
    quant = not bool(a["maximize_cost"])
    lines = [
        f"results    {run.path}",
        f"workload   {a['workload_name']}  (sha256 {str(a['workload_sha256'])[:12]})",
        f"problem    {a['problem']}   cost: {a['cost_name']} [{a['cost_unit']}] ({'maximized' if not quant else 'minimized'})",
        f"seed       {a['seed']}   created {created}",
        f"evaluated  {run.count} individuals ({failed} failed) in {len(run.generations['evaluated'])} generations,"
        f" {float(np.sum(ind['eval_seconds'])) if run.count else 0.0:.1f} s of evaluation",
    ]
    if not np.isnan(run.minimum_accuracy):
        lines.append(f"constraint accuracy >= {run.minimum_accuracy:.4f}")
    if len(run.generations["hypervolume"]):
        lines.append(f"hypervolume {run.generations['hypervolume'][-1]:.4f} (normalized, reference point (1, 1))")
    base = run.baseline
    if len(base["label"]):
        lines += ["", "baseline", f"  {'setting':<14}{'dataset':<13}{'accuracy':>9}{'samples':>9}  cost"]
        for i in range(len(base["label"])):
            lines.append(f"  {base['label'][i]:<14}{base['dataset'][i]:<13}{base['accuracy'][i]:>9.4f}"
                         f"{base['samples'][i]:>9}  {base['cost'][i]:.6g}")
    front = run.pareto()
    header = "bits per quantizer" if quant else "threshold per layer input"
    lines += ["", f"Pareto front ({len(front)} individuals; {header}: {' '.join(run.gene_names)})",
              f"  {'#':>5} {'gen':>4} {'accuracy':>9} {'cost':>12}  parameters"]
    for row in front:
        lines.append(f"  {row:>5} {ind['generation'][row]:>4} {ind['accuracy'][row]:>9.4f} {ind['cost'][row]:>12.6g}  "
                     + _format_params(ind["params"][row], quant))
    return "\n".join(lines)


def table_rows(run: RunData, rows: np.ndarray) -> list[dict]:
    """One flat dict per individual: scores, per-gene parameters and per-layer block counts."""
    ind, out = run.individuals, []
    for row in rows:
        record = {
            "index": int(row), "generation": int(ind["generation"][row]), "status": ind["status"][row],
            "accuracy": float(ind["accuracy"][row]), "cost": float(ind["cost"][row]),
            "constraint": float(ind["constraint"][row]), "eval_seconds": float(ind["eval_seconds"][row]),
        }
        record.update({name: float(v) for name, v in zip(run.gene_names, ind["params"][row])})
        for key in ("blocks_already", "blocks_created"):
            record.update({f"{key}:{name}": int(v) for name, v in zip(run.layer_names, ind[key][row])})
        out.append(record)
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    """Write flat records as CSV with a header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))

"""``qsx-batch export``: deployment files of chosen individuals (recipe JSON, PyTorch model, ONNX where possible)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_followup, results_path

NAME = "export"
HELP = "write a recipe, a fake-quantized PyTorch model and (8/4-bit) ONNX of chosen individuals"
DESCRIPTION = ("For each chosen individual: individual-<row>.recipe.json (per quantizer layer, role, bits, amax; per "
               "layer threshold and tile; workload hash and versions), individual-<row>.pt (load it with "
               "qsx_batch.tools.deployment.load_exported), and individual-<row>.onnx when ONNX can express it (all "
               "quantizers at 8 or 4 bits, no sparsity).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_followup(p)
    p.add_argument("--out", metavar="DIR", help="folder for the files (default: <results stem>-export)")


def run(args: argparse.Namespace) -> int:
    from ..tools.followup import load_followup

    job = load_followup(results_path(args.results, args.workload), args)
    from ..tools.deployment import export_chosen  # torch: once the results file and the choice are known good

    out = Path(args.out) if args.out else job.run.path.with_name(job.run.path.stem + "-export")
    for row, files, refusal in export_chosen(job, out):
        print(f"#{row:<5} " + "  ".join(str(f) for f in files) + (f"  (no ONNX: {refusal})" if refusal else ""))
    print(f"load a model with: qsx_batch.tools.deployment.load_exported('{out}/individual-<row>.pt')")
    return 0

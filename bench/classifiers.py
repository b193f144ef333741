"""Which torchvision classifiers the search covers, and how many genes each gets: the table of docs/workloads.md.

Usage: ``python bench/classifiers.py [--models NAME ...] [--markdown FILE]``

Every classifier torchvision builds by name is built with random weights, its attention exposed and its target
layers found and profiled on one 3x224x224 input, exactly as a search with the default
``layer_types: [Conv2d, Linear]`` and no ``skip_layers`` does (``qsx_batch/evaluation/assembly.py``). Per model: the
layers and quantization genes per type, the layers reached through ``F.linear``/``F.conv*``, the share of the
weights in searched layers, and the kinds of modules left in fp32; or the error a user would get.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from qsx_batch.errors import UserError
from qsx_batch.models import build_model, torchvision_model_names
from qsx_batch.models.attention import expose_attention
from qsx_batch.models.layers import profile_layers, target_layers, uncovered_layers

HEADER = ("| model | Conv2d layers | Linear layers | quantization genes | through `F.linear` | weights searched | "
          "left in fp32 |\n|---|---|---|---|---|---|---|")


def measure(name: str) -> str:
    """One markdown row for the classifier ``name``."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    expose_attention(model)
    try:
        layers = profile_layers(model, target_layers(model, ["Conv2d", "Linear"], []), torch.randn(1, 3, 224, 224))
    except UserError as exc:
        return f"| {name} | | | refused: {exc} | | | |"
    kinds = Counter(layer.kind for layer in layers)
    functional = sum(layer.functional for layer in layers)
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    left = Counter(u.kind for u in uncovered_layers(model, [layer.name for layer in layers]))
    fp32 = ", ".join(f"{kind} x{count}" if count > 1 else kind for kind, count in sorted(left.items())) or "-"
    share = sum(layer.params for layer in layers) / total
    return (f"| {name} | {kinds['Conv2d']} | {kinds['Linear']} | {2 * len(layers)} | {functional or '-'} | "
            f"{share:.1%} | {fp32} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these (default: every classifier)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = parser.parse_args(argv)
    rows = []
    print(HEADER, flush=True)
    for name in args.models or torchvision_model_names():
        start = time.perf_counter()
        with torch.inference_mode():
            rows.append(measure(name))
        print(rows[-1], f"<!-- {time.perf_counter() - start:.1f} s -->", flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join([HEADER, *rows]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Accuracy functions (``model.accuracy_function``): per batch, from model outputs and labels, one or several
(correct, count) pairs; a metric's accuracy is its summed correct over its summed count.

Built in: ``classification_accuracy`` (top-1) and ``top5_accuracy``. A user's own is ``module.path:callable``,
called as ``callable(outputs, labels)`` for every batch and returning ``(correct, count)`` or a list of such pairs
(one per head of a multi-head model; the first is the accuracy the search maximizes). Racing evaluation needs a
metric that counts correct samples, which only the built-ins promise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError
from ..plugins import import_callable, is_import_reference
from ..workload import WorkloadSpec

Pair = tuple[Any, Any]


def top1_hits(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per label: whether its highest output is the label."""
    return (outputs.argmax(1) == labels).reshape(-1)


def top5_hits(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per label: whether it is among its five highest outputs (all outputs when there are fewer)."""
    best = outputs.topk(min(5, outputs.shape[1]), dim=1).indices
    return (best == labels[:, None]).any(1).reshape(-1)


def classification_accuracy(outputs: torch.Tensor, labels: torch.Tensor) -> Pair:
    """Top-1: samples whose highest output is their label."""
    return top1_hits(outputs, labels).sum(), labels.numel()


def top5_accuracy(outputs: torch.Tensor, labels: torch.Tensor) -> Pair:
    """Top-5: samples whose label is among their five highest outputs."""
    return top5_hits(outputs, labels).sum(), labels.numel()


BUILTIN: dict[str, Callable[[torch.Tensor, torch.Tensor], Pair]] = {
    "classification_accuracy": classification_accuracy,
    "top5_accuracy": top5_accuracy,
}
HITS = {"classification_accuracy": top1_hits, "top5_accuracy": top5_hits}  # racing's paired comparisons
# Names of the reference tool's metrics that need its own models and datasets (detection, segmentation).
REFERENCE_ONLY = ("detection_accuracy", "segmentation_accuracy", "pixelwise_segmentation_accuracy",
                  "yolop_combined_accuracy")


@dataclass(frozen=True)
class AccuracyFunction:
    """A resolved ``model.accuracy_function``: its name, the callable, whether every pair counts samples, and
    (built-ins) which labels it counts as correct."""

    name: str
    function: Callable[[torch.Tensor, torch.Tensor], Pair | list[Pair]]
    counts_samples: bool
    hits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def pairs(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(metrics, 2) correct and count of one batch, on the outputs' device. A plain number in a pair (the
        built-ins' count) is filled in there by a kernel, not copied from the host: a copy would wait for the
        batch's queued work on a GPU."""
        value = self.function(outputs, labels)
        pairs = value if isinstance(value, list) else [value]

        def on_device(x: Any) -> torch.Tensor:
            if isinstance(x, torch.Tensor):
                return x.to(device=outputs.device, dtype=torch.float64)
            return torch.full((), float(x), dtype=torch.float64, device=outputs.device)

        try:
            return torch.stack([torch.stack([on_device(c), on_device(n)]) for c, n in pairs])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"accuracy function {self.name} returned {value!r}, not (correct, count) or a list of "
                             f"such pairs ({exc})") from None


def accuracy_function(name: str) -> AccuracyFunction:
    """Resolve ``model.accuracy_function`` (a UserError names the built-ins and how to plug one in)."""
    if name in BUILTIN:
        return AccuracyFunction(name, BUILTIN[name], counts_samples=True, hits=HITS[name])
    if is_import_reference(name):
        return AccuracyFunction(name, import_callable(name, "model.accuracy_function"), counts_samples=False)
    known = ", ".join(BUILTIN)
    why = (" It is a metric of the reference tool for its own detection and segmentation models, which qsx-batch "
           "does not ship.") if name in REFERENCE_ONLY else ""
    raise UserError(f"Unknown model.accuracy_function '{name}'.{why} Built in: {known}; or plug in your own as "
                    "'module.path:callable', called with (outputs, labels) of every batch and returning (correct, "
                    "count) or a list of such pairs, one per metric.")


def counts_samples(spec: WorkloadSpec) -> bool:
    """Whether the workload's accuracy counts correct samples, which racing's binomial bounds need."""
    return accuracy_function(spec.model.accuracy_function).counts_samples


def check_racing(spec: WorkloadSpec) -> None:
    """Resolve the workload's accuracy function; racing bounds accuracy with a binomial interval, so refuse it for
    metrics that are not counts of samples."""
    if spec.exploration.racing.enabled and not counts_samples(spec):
        raise UserError(f"exploration.racing needs an accuracy function that counts correct samples "
                        f"({', '.join(BUILTIN)}); model.accuracy_function '{spec.model.accuracy_function}' is not "
                        "known to. Turn racing off or use a built-in metric.")

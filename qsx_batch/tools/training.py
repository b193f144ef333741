"""Training: fp32 weights from the workload's ``training`` section (``qsx-batch train``), and the fitting and
saving that the fine-tuning of chosen individuals (:mod:`.retraining`) shares with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import Source
from ..data.shards import ShardStream
from ..errors import UserError
from ..evaluation.assembly import data_budget, load_block, workload_device
from ..evaluation.metrics import AccuracyFunction, accuracy_function
from ..models import build_model, save_file, save_weights
from ..models.quantized import split_quantizer_state
from ..problems import Problem
from ..workload import TrainingSpec, Workload


@dataclass
class EpochReport:
    epoch: int
    loss: float
    accuracy: float


def accuracy_on(model: nn.Module, samples: Source, metric: AccuracyFunction) -> float:
    """The workload's accuracy (the first metric of ``model.accuracy_function``) of ``model`` in eval mode."""
    model.eval()
    totals = None
    with torch.inference_mode():
        for inputs, labels in samples.batches():
            pairs = metric.pairs(model(inputs), labels)
            totals = pairs if totals is None else totals + pairs
    return float(totals[0, 0] / max(float(totals[0, 1]), 1.0)) if totals is not None else float("nan")


def classes_second(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Outputs laid out as cross-entropy wants them, classes second: a language model's (N, L, vocabulary), whose
    labels are (N, L), becomes (N, vocabulary, L); a classifier's (N, C) or a segmenter's (N, C, H, W) stays."""
    if outputs.dim() > 2 and tuple(outputs.shape[:-1]) == tuple(labels.shape):
        return outputs.movedim(-1, 1)
    return outputs


def fit(model: nn.Module, spec: TrainingSpec, train: Source | ShardStream, validation: Source | None, seed: int,
        metric: AccuracyFunction, on_epoch=None) -> list[EpochReport]:
    """Adam with cross-entropy (per token for a sequence model) over shuffled mini-batches; returns loss and
    accuracy per epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    reports = []
    for epoch in range(1, spec.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for inputs, labels in train.epoch(generator):
            optimizer.zero_grad()
            loss = loss_fn(classes_second(model(inputs), labels), labels)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(labels)
            seen += len(labels)
        acc = accuracy_on(model, validation, metric) if validation is not None else float("nan")
        reports.append(EpochReport(epoch, total / seen, acc))
        if on_epoch:
            on_epoch(reports[-1])
    return reports


def train_weights(workload: Workload, output: Path, on_epoch=None) -> tuple[list[EpochReport], float]:
    """Train ``model.type`` from scratch with the workload seed; save to ``output``; return the held-out accuracy."""
    spec = workload.spec.training
    if spec is None:
        raise UserError(f"Workload {workload.path} has no 'training' section to train weights from.")
    torch.manual_seed(workload.spec.seed)
    device = workload_device(workload)
    model = build_model(workload.spec.model.type, workload.spec.model.extra_args).to(device)
    budget = data_budget(workload, device)
    val = None
    if spec.datasets.validation is not None:
        val = load_block(workload, spec.datasets.validation, "training.datasets.validation", device, budget)
    train = load_block(workload, spec.datasets.train, "training.datasets.train", device, budget, cached=False)
    metric = accuracy_function(workload.spec.model.accuracy_function)
    reports = fit(model, spec, train, val, workload.spec.seed, metric, on_epoch)
    held_out = load_block(workload, workload.spec.exploration.datasets.baseline
                          or workload.spec.exploration.datasets.exploration, "held-out", device)
    save_weights(model.cpu(), output)
    return reports, accuracy_on(model.to(device), held_out, metric)


def save_finetuned(problem: Problem, path: Path, row: int) -> None:
    """Save fine-tuned fp32 weights (loadable as ``model.weights``) with the quantizer amax and the gene names."""
    weights, quantizers = split_quantizer_state(problem.model)
    save_file({"state_dict": weights, "quantizers": quantizers, "individual": int(row),
               "gene_names": list(problem.gene_names)}, path)

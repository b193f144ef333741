"""``qsx-batch plot``: figures of a results file (PNG and PDF), drawn with matplotlib without a display.

Figures: ``<stem>-pareto`` (accuracy vs cost of every individual, coloured by generation, with the Pareto front),
``<stem>-front-bits`` (input and weight bits per layer of the front; quantizing runs),
``<stem>-front-sparsity`` (thresholds and created zero blocks per layer of the front; sparsity and joint runs), and
``<stem>-hypervolume`` (per generation) and, when the file holds a sensitivity sweep, ``<stem>-sensitivity`` (a heat
map of the accuracy per gene and swept value).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.record import Status
from .pareto import REFERENCE_POINT, usable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from . import Run

ACCURACY_LABEL = "accuracy on the exploration data [fraction of samples]"


def _figure(run: Run, title: str, rows: int = 1) -> tuple[Figure, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2 * rows + 1.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    fig.suptitle(f"{run.header.workload_name}: {title}")
    return fig, axes


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Figure, out: Path, name: str, formats: list[str]) -> list[Path]:
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def pareto_figure(run: Run) -> Figure:
    """Accuracy vs cost of every individual evaluated ok, coloured by generation, with the Pareto front."""
    ind = run.individuals
    fig, (ax,) = _figure(run, f"accuracy vs {run.header.cost_name} ({run.count} individuals)")
    ok = ind["status"] == Status.OK
    feasible = usable(ind["constraint"], ind["status"])
    generations = max(int(ind["generation"].max()) if run.count else 0, 1)
    scatter = None
    for mask, marker, label in ((feasible, "o", "individual"), (ok & ~feasible, "x", "below accuracy constraint")):
        if mask.any():
            scatter = ax.scatter(ind["cost"][mask], ind["accuracy"][mask], c=ind["generation"][mask], cmap="viridis",
                                 vmin=0, vmax=generations, marker=marker, s=18, label=label)
    if scatter is not None:
        _integer_ticks(fig.colorbar(scatter, ax=ax, label="generation").ax.yaxis)
    front = run.pareto()
    if len(front):
        ax.plot(ind["cost"][front], ind["accuracy"][front], color="red", marker="s", markersize=4, linewidth=1.5,
                drawstyle="steps-post" if run.front_step == "left" else "steps-pre", label="Pareto front")
    _draw_baseline(run, ax)
    ax.set_xlabel(run.cost_label)
    ax.set_ylabel(ACCURACY_LABEL)
    if ax.get_legend_handles_labels()[0]:  # a file holding only a sensitivity sweep has no individual yet
        ax.legend(loc="best", fontsize="small")
    return fig


def _draw_baseline(run: Run, ax: Axes) -> None:
    base = run.baseline
    if not np.isnan(run.minimum_accuracy):
        ax.axhline(run.minimum_accuracy, color="gray", linestyle="--", linewidth=1, label="accuracy constraint")
    for label, dataset, accuracy, cost in zip(base["label"], base["dataset"], base["accuracy"], base["cost"]):
        if dataset != "exploration":
            continue
        if label == "fp32":
            ax.axhline(accuracy, color="black", linestyle=":", linewidth=1, label="fp32 accuracy")
        else:
            ax.scatter([cost], [accuracy], marker="*", s=120, color="black", zorder=3, label=f"baseline {label}")


def _front_lines(run: Run, max_lines: int) -> np.ndarray:
    """Up to ``max_lines`` front individuals spread evenly along the front."""
    front = run.pareto()
    if len(front) <= max_lines:
        return front
    return front[np.unique(np.linspace(0, len(front) - 1, max_lines).round().astype(int))]


def _per_layer(run: Run, axes: np.ndarray, rows: np.ndarray, series: list[tuple[str, np.ndarray]]) -> None:
    """One line per individual on each axis; ``series`` gives (y label, values[row, layer]) per axis."""
    from matplotlib import colormaps

    ind = run.individuals
    colors = colormaps["plasma"](np.linspace(0, 0.9, max(len(rows), 1)))
    for ax, (ylabel, values) in zip(axes, series):
        for color, row in zip(colors, rows):
            ax.plot(np.arange(values.shape[1]), values[row], marker="o", color=color,
                    label=f"#{row}: accuracy {ind['accuracy'][row]:.3f}, cost {ind['cost'][row]:.4g}")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small", ncol=2)
    axes[-1].set_xticks(np.arange(len(run.layer_names)), run.layer_names, rotation=45, ha="right")
    axes[-1].set_xlabel("layer (model order)")


def front_bits_figure(run: Run, max_lines: int) -> Figure:
    """Input and weight bit widths per layer of the front's individuals."""
    rows = _front_lines(run, max_lines)
    fig, axes = _figure(run, f"bit widths of the Pareto front ({len(rows)} of {len(run.pareto())} shown)", rows=2)
    params, columns = run.individuals["params"], run.param_columns()
    _per_layer(run, axes, rows, [("input bits [bits]", params[:, columns["input_bits"]]),
                                 ("weight bits [bits]", params[:, columns["weight_bits"]])])
    for ax in axes:
        _integer_ticks(ax.yaxis)
    return fig


def front_sparsity_figure(run: Run, max_lines: int) -> Figure:
    """Thresholds and created zero blocks per sample, per layer, of the front's individuals."""
    ind = run.individuals
    rows = _front_lines(run, max_lines)
    fig, axes = _figure(run, f"sparsity of the Pareto front ({len(rows)} of {len(run.pareto())} shown)", rows=2)
    per_sample = ind["blocks_created"] / np.maximum(ind["samples"], 1)[:, None]
    _per_layer(run, axes, rows, [("threshold [input magnitude]", ind["params"][:, run.param_columns()["threshold"]]),
                                 ("created zero blocks [blocks per sample]", per_sample)])
    return fig


def hypervolume_figure(run: Run) -> Figure:
    """Hypervolume of each generation's population and of everything evaluated so far."""
    fig, (ax,) = _figure(run, "hypervolume over generations")
    generations = np.arange(run.generations.rows)
    ax.plot(generations, run.hypervolume(), marker="o", label="population after the generation")
    ax.plot(generations, run.cumulative_hypervolume(), marker=".", linestyle="--", label="all individuals so far")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"hypervolume [normalized, reference {tuple(REFERENCE_POINT.tolist())}]")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def sensitivity_figure(run: Run) -> Figure:
    """Heat map of the sensitivity sweep: accuracy per gene and parameter, one panel per set of swept values."""
    from matplotlib.figure import Figure

    sweep = run.sensitivity()
    groups = sweep.groups()
    heights = [max(2.0, 0.28 * len(genes) + 1.2) for _, genes in groups]
    fig = Figure(figsize=(8, sum(heights) + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(groups), 1, height_ratios=heights))
    fig.suptitle(f"{run.header.workload_name}: sensitivity\none gene swept, the others neutral (reference "
                 f"accuracy {sweep.reference_accuracy:.4f})", fontsize="medium")
    for ax, (params, genes) in zip(axes, groups):
        grid = sweep.grid(params, genes)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid) if np.isfinite(grid).any() else 0,
                          vmax=sweep.reference_accuracy if np.isfinite(sweep.reference_accuracy) else 1)
        ax.set_xticks(range(len(params)), [f"{p:.4g}" for p in params])
        ax.set_yticks(range(len(genes)), [run.gene_names[g] for g in genes], fontsize=7)
        ax.set_xlabel(sweep.axis_label(params, run.bits))
        if grid.size <= 400:
            for (i, j), value in np.ndenumerate(grid):
                ax.text(j, i, "-" if np.isnan(value) else f"{value:.3f}", ha="center", va="center", fontsize=6,
                        color="white" if np.isnan(value) or value < np.nanmean(grid) else "black")
        fig.colorbar(image, ax=ax, label="accuracy")
    return fig


def plot_run(run: Run, out: Path, formats: list[str], max_lines: int = 10) -> list[Path]:
    """Write every figure of ``run`` into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    stem = run.path.stem
    figures = {"pareto": pareto_figure(run), "hypervolume": hypervolume_figure(run)}
    if len(run.pareto()):
        columns = run.param_columns()
        if "input_bits" in columns:
            figures["front-bits"] = front_bits_figure(run, max_lines)
        if "threshold" in columns:
            figures["front-sparsity"] = front_sparsity_figure(run, max_lines)
    if run.sensitivity() is not None:
        figures["sensitivity"] = sensitivity_figure(run)
    return [path for name, fig in figures.items() for path in _save(fig, out, f"{stem}-{name}", formats)]

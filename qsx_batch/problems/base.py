"""What every exploration problem provides: a genome space, its decoding, and the cost objective."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from torch import nn

from ..errors import UserError
from ..models.functional import route_functional_uses
from ..models.layers import LayerInfo
from ..workload import WorkloadSpec


class Problem(ABC):
    """Per-layer settings of one prepared model; a genome is one setting of the whole network.

    Every problem is built the same way, ``cls(model, layers, spec)``: the model (on its device), its profiled
    target layers, and the workload spec it reads its settings from. Objectives are accuracy (maximized) and
    ``cost``; ``maximize_cost`` says which way the cost goes.

    What callers outside the problem use, besides the genome space and the cost: ``model``, ``layers``,
    ``quantizers`` (calibration, deployment), :attr:`needs_calibration` (the calibration hook),
    :meth:`settings` (deployment) and :meth:`configure_trainable` (retraining).
    """

    name: str = ""
    cost_name: str = "cost"
    cost_unit: str = ""
    maximize_cost: bool = False
    # what ``exploration.initial_population: auto`` starts from: "sensitivity" where the head start was measured
    # to pay (docs/search.md), else "random"
    default_start: str = "random"

    def __init__(self, model: nn.Module, layers: list[LayerInfo], spec: WorkloadSpec):
        self.model = model
        self.layers = layers
        # layers the model uses through F.linear/F.conv* run as layer calls from now on (quantizers, hooks)
        route_functional_uses(model, [layer.name for layer in layers if layer.functional])
        # (name, TensorQuantizer) of every quantizer a genome sets, in forward order; none unless the problem
        # quantizes
        self.quantizers: list[tuple[str, nn.Module]] = []

    @property
    def needs_calibration(self) -> bool:
        """Whether the quantizers need their amax calibrated (or loaded from the calibration file) before the
        first evaluation; model assembly calls the calibration when this is true."""
        return bool(self.quantizers)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    @abstractmethod
    def gene_names(self) -> list[str]:
        """One name per gene (quantizer or layer input)."""

    @property
    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of every gene."""

    @property
    def integer(self) -> bool:
        """Whether genes are integers (discrete steps or bit widths)."""
        return True

    @abstractmethod
    def decode(self, genome: np.ndarray) -> np.ndarray:
        """The parameters a genome stands for (bit widths or thresholds), one per gene."""

    @abstractmethod
    def configure(self, genome: np.ndarray | None) -> None:
        """Set the model to a genome; ``None`` is the unmodified fp32 network."""

    def configure_trainable(self, genome: np.ndarray) -> None:
        """Set the model to a genome for fine-tuning (gradients reach every weight); same as ``configure`` here."""
        self.configure(genome)

    @abstractmethod
    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        """The second objective for decoded parameters and measured statistics."""

    def fp32_params(self) -> np.ndarray:
        """The parameters that stand for the unmodified network (32 bits, or zero thresholds)."""
        return np.zeros(len(self.gene_names))

    def read_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer: blocks seen, already zero, and newly zeroed in the last evaluation (none by default)."""
        zeros = np.zeros(len(self.layers), dtype=np.int64)
        return zeros, zeros, zeros

    def settings(self, genome: np.ndarray) -> dict:
        """What a genome sets, as plain data for a deployment recipe: ``quantizers`` (name, layer, role, bits,
        axis, amax) and/or ``sparsity`` (layer, threshold, block width and height)."""
        return {}

    def blocks_per_sample(self) -> float:
        """Tiles per sample over all target layers, when the problem counts blocks (0 otherwise)."""
        return 0.0

    def encode(self, params: np.ndarray, source: str) -> np.ndarray:
        """The genome that stands for decoded parameters (one bit width or threshold per gene); a UserError names
        ``source`` (where the parameters came from) when one is out of range."""
        raise UserError(f"{source}: parameters cannot be given for {self.name} (only for sparsity and quantization "
                        "problems and their joint problem).")

    def uniform_genome(self, value: float) -> np.ndarray:
        """The genome with ``value`` (a parameter: bits or a threshold) in every gene, for
        ``exploration.predefined_parameters``."""
        return self.encode(np.full(len(self.gene_names), float(value)), "exploration.predefined_parameters")

    def neutral_genome(self) -> np.ndarray:
        """Every gene at its least aggressive value (the upper bit width, a zero threshold): the setting a
        sensitivity sweep varies one gene from."""
        return self.bounds[1]

    def sweep_values(self, gene: int, points: int) -> np.ndarray:
        """The values a sensitivity sweep gives one gene: every integer of its range (at most ``points``, evenly
        spread, both ends included), or ``points`` evenly spaced values of a continuous range."""
        lower, upper = (float(b[gene]) for b in self.bounds)
        values = np.linspace(lower, upper, points)
        if self.integer:
            values = np.unique(np.rint(values)) if upper - lower + 1 > points else np.arange(lower, upper + 1)
        return values.astype(float)

    def reference_genomes(self) -> dict[str, np.ndarray | None]:
        """Named settings evaluated as the baseline before the search."""
        return {"fp32": None}

    def worst_cost(self) -> float:
        """The cost given to an individual whose evaluation failed."""
        lo, hi = self.bounds
        return 0.0 if self.maximize_cost else self.cost(self.decode(hi), np.zeros(len(self.layers)), 1)

    def fitness(self, accuracy: float, cost: float) -> tuple[float, float]:
        """The two objectives in pymoo's minimization form."""
        return -accuracy, (-cost if self.maximize_cost else cost)

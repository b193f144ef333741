"""Problem registry: ``problem.problem_function`` names one of these; :func:`create_problem` builds it."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..models.layers import LayerInfo
from ..workload import WorkloadSpec
from .base import Problem
from .energy import EnergyAwareQuantProblem
from .joint import JointProblem
from .quantization import QuantizationProblem
from .sparsity import SparsityProblem

PROBLEMS: dict[str, type[Problem]] = {
    "quantization_problem": QuantizationProblem,
    "sparsity_problem": SparsityProblem,
    "energy_aware_quant_problem": EnergyAwareQuantProblem,
    "joint_problem": JointProblem,
}
ALIASES = {"quant_problem": "quantization_problem", "layerwise_quantization_problem": "quantization_problem"}

__all__ = ["PROBLEMS", "EnergyAwareQuantProblem", "JointProblem", "Problem", "QuantizationProblem", "SparsityProblem",
           "create_problem", "problem_class"]


def problem_class(name: str) -> type[Problem]:
    """The problem class for ``problem.problem_function`` (UserError listing valid names)."""
    key = ALIASES.get(name, name)
    if key not in PROBLEMS:
        raise UserError(f"Unknown problem.problem_function '{name}'. Valid names: {', '.join(PROBLEMS)}.")
    return PROBLEMS[key]


def create_problem(spec: WorkloadSpec, model: nn.Module, layers: list[LayerInfo]) -> Problem:
    """The workload's problem on ``model`` (modified in place) and its profiled target ``layers``."""
    cls = problem_class(spec.problem.problem_function)
    if spec.exploration.gpu_math == "integer" and not issubclass(cls, QuantizationProblem):
        raise UserError(f"exploration.gpu_math: integer computes quantized layers on their integer grid, but "
                        f"{spec.problem.problem_function} quantizes nothing; use gpu_math tf32 or strict.")
    return cls(model, layers, spec)

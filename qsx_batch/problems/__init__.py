"""Problem registry: ``problem.problem_function`` names one of these."""

from __future__ import annotations

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

__all__ = ["PROBLEMS", "EnergyAwareQuantProblem", "JointProblem", "Problem", "QuantizationProblem", "SparsityProblem", "problem_class"]


def problem_class(name: str) -> type[Problem]:
    """The problem class for ``problem.problem_function`` (UserError listing valid names)."""
    from ..errors import UserError

    key = ALIASES.get(name, name)
    if key not in PROBLEMS:
        raise UserError(f"Unknown problem.problem_function '{name}'. Valid names: {', '.join(PROBLEMS)}.")
    return PROBLEMS[key]

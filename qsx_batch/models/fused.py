"""Elementwise functions of an evaluation run as fused kernels on a GPU.

An evaluation's fake quantizers and sparsity hooks are chains of small elementwise operations; eagerly each one
is a pass over the tensor and a kernel launch. On a GPU a :class:`Fused` function is ``torch.compile``'d (Triton
kernels: one pass for the chain), once per process: shapes are dynamic and the values that change per individual
(bit widths, thresholds) are passed as tensors, so neither a new batch size nor a new genome compiles again.
Elsewhere the same function runs eagerly: on the CPU compiling costs tens of seconds per process and gains little
over torch's own kernels. Both paths compute the same numbers, bit for bit (tests/test_fused.py compiles them on
the CPU to check).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

FUSED_DEVICES = {"cuda"}  # device types whose calls run compiled
RECOMPILE_LIMIT = 64  # graphs per function: a few tensor ranks and padding cases, never one per shape


class Fused:
    """``function`` compiled on first use for tensors on a device type in :data:`FUSED_DEVICES`, eager for the
    rest. A compiler that fails (no Triton, no C++ compiler) is reported once and the function runs eagerly."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.compiled = None
        self.failure: str | None = None

    def active(self, tensor: torch.Tensor) -> bool:
        """Whether a call on ``tensor``'s device runs compiled."""
        return tensor.device.type in FUSED_DEVICES and self.failure is None

    def __call__(self, *args: Any) -> Any:
        if not self.active(args[0]):
            return self.function(*args)
        if self.compiled is None:
            _allow_recompiles()
            self.compiled = torch.compile(self.function, dynamic=True)
        try:
            return self.compiled(*args)
        except Exception as exc:  # the eager call below raises again whatever is not the compiler's
            self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            warnings.warn(f"qsx-batch: compiling {self.function.__name__} for {args[0].device} failed "
                          f"({self.failure}); it runs unfused (slower, same numbers).", RuntimeWarning, stacklevel=2)
            return self.function(*args)


def _allow_recompiles() -> None:
    """Raise dynamo's graphs-per-function limit to :data:`RECOMPILE_LIMIT` (past it, a function runs eagerly)."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the second: its name before torch 2.6
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
            return

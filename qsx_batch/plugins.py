"""Resolve the user's own components written as ``module.path:callable``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .errors import UserError


def is_import_reference(name: str) -> bool:
    return ":" in name


def import_callable(reference: str, what: str) -> Callable[..., Any]:
    """Import ``module.path:callable``; ``what`` names the workload key in error messages."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UserError(f"{what} '{reference}' must look like 'module.path:callable'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what} '{reference}': cannot import module '{module_name}' ({exc}).") from None
    target = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise UserError(f"{what} '{reference}': module '{module_name}' has no attribute '{attr}'.")
    if not callable(target):
        raise UserError(f"{what} '{reference}' is not callable.")
    return target

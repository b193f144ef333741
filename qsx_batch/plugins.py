"""Resolve the user's own components written as ``module.path:callable``: imported from the folder of the
workload that names them first, then from the working folder, then from PYTHONPATH and the installed packages."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError

_workload_folders: list[str] = []  # of the workloads this process loaded, newest first


def add_workload_folder(folder: Path) -> None:
    """Search ``folder`` (a workload file's) first for the modules its ``module.path:callable`` names."""
    name = str(Path(folder).resolve())
    if name in _workload_folders:
        _workload_folders.remove(name)
    _workload_folders.insert(0, name)


def _search_user_folders() -> None:
    for name in reversed([*_workload_folders, os.getcwd()]):
        if name not in sys.path:
            sys.path.insert(0, name)
    importlib.invalidate_caches()


def is_import_reference(name: str) -> bool:
    return ":" in name


def import_callable(reference: str, what: str) -> Callable[..., Any]:
    """Import ``module.path:callable``; ``what`` names the workload key in error messages."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UserError(f"{what} '{reference}' must look like 'module.path:callable'.")
    _search_user_folders()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = ", ".join([*_workload_folders, "the working folder", "PYTHONPATH"])
        raise UserError(f"{what} '{reference}': cannot import module '{module_name}' ({exc}); searched {where} and "
                        "the installed packages.") from None
    target = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise UserError(f"{what} '{reference}': module '{module_name}' has no attribute '{attr}'.")
    if not callable(target):
        raise UserError(f"{what} '{reference}' is not callable.")
    return target

"""Executors move evaluation requests to evaluators and results back; they never touch the search state."""

from .local import LocalExecutor

__all__ = ["LocalExecutor"]

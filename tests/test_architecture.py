"""The package's shape: imports point one way (no cycles, module- or function-level), every module imports alone,
and the command modules stay above the library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "qsx_batch"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (module level and inside functions), plus the
    packages around them, whose ``__init__`` runs first."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            while target and target != "qsx_batch":
                if target != name and not name.startswith(target + "."):
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: imported_modules(name) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycles():
    assert import_cycles() == []


def test_the_cycle_finder_finds_cycles(monkeypatch):
    """The check above can fail: a function-level import from the store back into the search is a cycle."""
    original = imported_modules
    monkeypatch.setattr(sys.modules[__name__], "imported_modules",
                        lambda name: original(name) | ({"qsx_batch.search.nsga"} if name == "qsx_batch.store.reader"
                                                       else set()))
    assert any("qsx_batch.search.nsga" in cycle and "qsx_batch.store.reader" in cycle for cycle in import_cycles())


def test_library_never_imports_commands():
    offenders = {name: sorted(m for m in imported_modules(name) if m.startswith("qsx_batch.commands"))
                 for name in MODULES if not name.startswith("qsx_batch.commands") and name not in ("qsx_batch.cli",
                                                                                                  "qsx_batch.__main__")}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_commands_never_import_each_other():
    from qsx_batch.commands import COMMANDS

    commands = {module.__name__ for module in COMMANDS}  # the shared options module is not a command
    assert len(commands) == len([n for n in MODULES if n.startswith("qsx_batch.commands.")]) - 1
    for name in commands:
        assert not (imported_modules(name) & commands), name


def test_commands_leave_executors_and_writing_to_the_library():
    """Commands parse, call one library function and print: none sets up an executor or writes a results file."""
    from qsx_batch.commands import COMMANDS

    for module in COMMANDS:
        used = imported_modules(module.__name__)
        assert not {m for m in used if m.startswith(("qsx_batch.executors", "qsx_batch.store.writer"))}, module


def test_nothing_below_problems_imports_them():
    below = ("qsx_batch.models", "qsx_batch.data", "qsx_batch.evaluation.calibration", "qsx_batch.workload",
             "qsx_batch.evaluation.record", "qsx_batch.evaluation.racing", "qsx_batch.errors", "qsx_batch.plugins")
    for name in MODULES:
        if name.startswith(below):
            assert not any(m.startswith("qsx_batch.problems") for m in imported_modules(name)), name


def test_few_modules_at_the_top():
    """Besides __init__, __main__ and cli, at most six modules (the runtime base) sit beside the packages."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__", "cli"))
    assert len(top) <= 6, top


@pytest.mark.parametrize("name", [n for n in MODULES if n != "qsx_batch.__main__"])
def test_every_module_imports_alone(name):
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_worker_side_stays_light():
    """What an array task imports: no results store, search, pymoo, h5py or command (checked in a real task by
    tests/test_launch.py as well)."""
    code = ("import sys, qsx_batch.executors.worker; "
            "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('h5py', 'pymoo') "
            "or m.startswith(('qsx_batch.commands', 'qsx_batch.store', 'qsx_batch.search', 'qsx_batch.results'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []

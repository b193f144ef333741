"""Reading workload files: YAML with a ``workload:`` root, validated, with one-paragraph errors that name the
file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import UserError
from ..plugins import add_workload_folder
from .handle import Workload, default_workload_path
from .schema import WorkloadSpec, did_you_mean


def _model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at ``loc`` (for did-you-mean suggestions)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        where = "workload." + ".".join(str(p) for p in loc) if loc else "workload"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc, WorkloadSpec)
            allowed = sorted(parent.model_fields) if parent else []
            hint = did_you_mean(str(loc[-1]), allowed)
            lines.append(f"unknown key '{where}'.{hint} Allowed here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{where}'.")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")  # a whole section is not repeated: its validator names the values
            lines.append(f"'{where}': {msg}." if isinstance(value, dict) else f"'{where}' = {value!r}: {msg}.")
    return f"Workload {path} is invalid: " + " ".join(lines)


def parse_workload(text: str, path: Path) -> Workload:
    """Validate workload text; ``path`` names the file in messages and anchors relative inputs."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"Workload {path} is not valid YAML{where}: {exc.problem}.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"Workload {path} is not valid YAML: {exc}.") from None
    if not isinstance(data, dict) or "workload" not in data:
        raise UserError(f"Workload {path} must have a top-level 'workload:' mapping.")
    extra = sorted(set(data) - {"workload"})
    if extra:
        raise UserError(f"Workload {path} has unknown top-level keys {extra}; everything belongs under 'workload:'.")
    try:
        spec = WorkloadSpec.model_validate(data["workload"] or {})
    except ValidationError as exc:
        raise UserError(_format_errors(path, exc)) from None
    spec._folder = path.resolve().parent
    add_workload_folder(spec._folder)  # its own modules (model.type: module:callable) are imported from there
    return Workload(spec=spec, path=path.resolve(), text=text)


def load_workload(path: str | Path | None) -> Workload:
    """Read and validate a workload file; ``None`` loads the embedded default."""
    path = default_workload_path() if path is None else Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"Workload file {path} does not exist.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"Workload file {path} cannot be read: {exc}.") from None
    return parse_workload(text, path)


def differing_keys(a: WorkloadSpec, b: WorkloadSpec) -> list[str]:
    """The dotted keys whose values differ between two workloads (defaults filled in), in schema order."""
    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict) and value:
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    left, right = flat(a.model_dump(mode="json"), ""), flat(b.model_dump(mode="json"), "")
    return [key for key in {**left, **right} if left.get(key) != right.get(key)]


def dump_workload(workload: Workload) -> str:
    """The resolved workload (defaults filled in) as YAML."""
    return yaml.safe_dump({"workload": workload.spec.model_dump(mode="json")}, sort_keys=False)

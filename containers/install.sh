#!/bin/sh
# Installs qsx-batch with its pinned PyTorch/CUDA stack into /opt/qsx/venv.
# The ONE install step of both recipes: containers/Dockerfile (RUN) and containers/qsx.def (%post).
#
# Environment (the recipes pass their build arguments):
#   TORCH_VERSION, TORCHVISION_VERSION, PYTORCH_QUANTIZATION_VERSION   pinned versions (see pyproject.toml)
#   PIP_ARGS      extra pip options, word-split: an index for another CUDA build
#                 ("--extra-index-url https://download.pytorch.org/whl/cu126") or an offline wheel directory
#                 ("--no-index --find-links /wheelhouse")
#   QSX_SRC       the project source (pyproject.toml + qsx_batch/), removed after the install
set -eu

: "${TORCH_VERSION:?}" "${TORCHVISION_VERSION:?}" "${PYTORCH_QUANTIZATION_VERSION:?}" "${QSX_SRC:?}"
PIP_ARGS=${PIP_ARGS:-}
VENV=/opt/qsx/venv

# Python from the distribution (Ubuntu 24.04: 3.12, Debian 12: 3.11); no compilers: every dependency is a wheel.
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
apt-get clean
rm -rf /var/lib/apt/lists/*

python3 -m venv "$VENV"
# shellcheck disable=SC2086  # PIP_ARGS holds several options on purpose
"$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check $PIP_ARGS \
    "torch==${TORCH_VERSION}" \
    "torchvision==${TORCHVISION_VERSION}" \
    "pytorch-quantization==${PYTORCH_QUANTIZATION_VERSION}" \
    "${QSX_SRC}"
rm -rf "${QSX_SRC}"

# Docker's default user; Apptainer runs as the calling user and never uses it.
groupadd --gid 10001 qsx
useradd --create-home --uid 10001 --gid 10001 --shell /bin/sh qsx
# The working folder: results/ lands here unless a bind mount replaces it; writable for `docker run --user UID`.
install -d -m 1777 /work

"""Amax calibration of every input and weight TensorQuantizer, saved to and reused from a file.

Calibration runs in eval mode under ``torch.no_grad`` so BatchNorm statistics never change. The file holds
plain tensors keyed by quantizer name; loading sets the ``_amax`` buffers directly (pytorch-quantization's
``load_state_dict`` path calls ``.cuda()``, which fails on CPU-only machines).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..data import Source
from ..errors import UserError
from ..models import save_file

FORMAT = "qsx-batch-calibration/1"


def calibrate(model: nn.Module, quantizers: list[tuple[str, nn.Module]], samples: Source,
              method: str, histogram_method: str, percentile: float) -> dict[str, torch.Tensor]:
    """Collect statistics over ``samples`` and return each quantizer's amax."""
    was_training = model.training
    model.eval()
    for _, q in quantizers:
        q.disable_quant()
        q.enable_calib()
        q.enable()
    with torch.no_grad():
        for inputs, _ in samples.batches():
            model(inputs)
    amax = {}
    for name, q in quantizers:
        if method == "histogram" and name.endswith(".input"):
            kwargs = {"method": histogram_method}
            if histogram_method == "percentile":
                kwargs["percentile"] = percentile
            with _histogram_on_this_machine():
                q.load_calib_amax(**kwargs, strict=False)
        else:
            q.load_calib_amax(strict=False)
        q.disable_calib()
        q.enable_quant()
        amax[name] = q._amax.detach().cpu().clone()
        if not torch.isfinite(amax[name]).all():
            raise UserError(f"Calibration of quantizer {name} gave no finite amax: the calibration data never reached it.")
    model.train(was_training)
    return amax


@contextmanager
def _histogram_on_this_machine() -> Iterator[None]:
    """pytorch-quantization's histogram ``mse`` search moves its histogram to the GPU with ``.cuda()``; on a
    machine without one that move is made a no-op, so the library's own search runs on the CPU."""
    if torch.cuda.is_available():
        yield
        return
    move = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = move


def apply_amax(quantizers: list[tuple[str, nn.Module]], amax: dict[str, torch.Tensor], source: Path,
               device: torch.device) -> None:
    """Set every quantizer's amax from a calibration mapping."""
    names = [n for n, _ in quantizers]
    if sorted(names) != sorted(amax):
        raise UserError(
            f"Calibration file {source} was made for other quantizers ({len(amax)} stored, {len(names)} in this "
            "model). Run 'qsx-batch calibrate WORKLOAD --force' to redo it."
        )
    for name, q in quantizers:
        if hasattr(q, "_amax"):
            del q._amax
        q.register_buffer("_amax", amax[name].to(device).clone())
        q.disable_calib()
        q.enable_quant()


def save_calibration(path: Path, amax: dict[str, torch.Tensor], fingerprint: dict) -> None:
    """Write amax values and what they were computed from."""
    save_file({"format": FORMAT, "fingerprint": fingerprint, "amax": amax}, path)


def load_calibration(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a calibration file written by :func:`save_calibration`."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise UserError(f"Calibration file {path} cannot be read ({exc}); run 'qsx-batch calibrate WORKLOAD --force'.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"Calibration file {path} is not a qsx-batch calibration file; run 'qsx-batch calibrate WORKLOAD --force'.")
    return data["amax"], data.get("fingerprint", {})

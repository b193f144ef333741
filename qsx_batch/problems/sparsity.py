"""Per-layer thresholds that zero small blocks of each target layer's input.

Tiling: the input of a Conv2d (N, C, H, W) is cut per sample and channel into spatial tiles of ``bh`` rows and
``bw`` columns of the feature map (``block_size: B`` is B x B, ``block_size: [w, h]`` is h rows of w columns; edge
tiles are partial). The input of a Linear layer is cut over its last two dimensions, tokens x features: ``bh``
consecutive tokens (rows of the second-to-last dimension: a transformer's tokens or windows' tokens, the
positions along a row of a channels-last map) by ``bw`` consecutive features; every other leading dimension
(samples, windows, map rows) separates tiles. A Linear input of one feature vector per sample (N, F) is cut into
runs of ``bh * bw`` consecutive features. A tile's magnitude is its largest absolute value: a tile whose magnitude
is below the layer's threshold is set to zero. Per layer we count tiles already zero before thresholding and tiles
the threshold newly zeroed ("created"). All of it is batched tensor code with counters kept on the device: the
input is viewed tile by tile (zero-padded to whole tiles) and reduced with ``amax``, and the per-tile mask is
broadcast back over the rows of each tile without materializing a full-size mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.fused import Fused
from ..models.layers import LayerInfo
from ..workload import ExtraArgs, WorkloadSpec
from .base import Problem


def threshold_values(extra: ExtraArgs) -> np.ndarray | None:
    """The discrete threshold steps (``None`` for continuous thresholds).

    linear: ``steps`` evenly spaced values from 0 to ``threshold_limit``; log: 0 followed by ``steps - 1``
    geometrically spaced values from ``threshold_limit / 1000`` to ``threshold_limit``.
    """
    steps, limit = extra.discrete_threshold_steps, extra.threshold_limit
    if extra.discrete_threshold_method == "linear":
        return np.linspace(0.0, limit, steps)
    if extra.discrete_threshold_method == "log":
        return np.concatenate([[0.0], np.geomspace(limit / 1000.0, limit, steps - 1)])
    return None


def tiles_per_sample(shape: tuple[int, ...], block: tuple[int, int], linear: bool = False) -> int:
    """Tiles of one sample's layer input of ``shape`` for a (height, width) tile: a Conv2d's (C, H, W) map, a
    Linear layer's (..., tokens, features) or (features,) input."""
    bh, bw = block
    if linear and len(shape) >= 2:
        *groups, tokens, features = shape
        return int(np.prod(groups, dtype=np.int64)) * -(-tokens // min(bh, tokens)) * -(-features // min(bw, features))
    if len(shape) == 3 and not linear:
        c, h, w = shape
        return c * -(-h // min(bh, h)) * -(-w // min(bw, w))
    features = int(np.prod(shape))
    return -(-features // min(bh * bw, features))


def tiles(x: torch.Tensor, block: tuple[int, int], tokens: bool) -> torch.Tensor:
    """``x`` zero-padded to whole tiles and viewed tile by tile: (N, C, H/bh, bh, W/bw, bw) for a feature map,
    (G, L/bh, bh, F/bw, bw) for ``tokens`` x features (G: all leading dimensions), (N, F/(bh*bw), bh*bw) for any
    other input (flattened per sample). A side shorter than a tile is one tile."""
    if tokens:
        rows = x.reshape(-1, x.shape[-2], x.shape[-1])
        bh, bw = min(block[0], rows.shape[1]), min(block[1], rows.shape[2])
        pad_l, pad_f = -rows.shape[1] % bh, -rows.shape[2] % bw
        if pad_l or pad_f:
            rows = F.pad(rows, (0, pad_f, 0, pad_l))
        g, length, features = rows.shape
        return rows.reshape(g, length // bh, bh, features // bw, bw)
    if x.dim() == 4:
        bh, bw = min(block[0], x.shape[2]), min(block[1], x.shape[3])
        pad_h, pad_w = -x.shape[2] % bh, -x.shape[3] % bw
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        n, c, h, w = x.shape
        return x.reshape(n, c, h // bh, bh, w // bw, bw)
    flat = x.reshape(x.shape[0], -1)
    run = min(block[0] * block[1], flat.shape[1])
    pad = -flat.shape[1] % run
    if pad:
        flat = F.pad(flat, (0, pad))
    return flat.reshape(flat.shape[0], -1, run)


def _rows_axis(tiled: torch.Tensor) -> int | None:
    """The axis of the rows within a tile, after the last axis is reduced (None: a tile is one run)."""
    return {6: 3, 5: 2}.get(tiled.dim())


def magnitudes(tiled: torch.Tensor) -> torch.Tensor:
    """Largest absolute value of every tile (zero padding never raises it)."""
    mags = tiled.abs().amax(-1)
    axis = _rows_axis(tiled)
    return mags if axis is None else mags.amax(axis)


def spread(keep: torch.Tensor, tiled: torch.Tensor) -> torch.Tensor:
    """The 0/1 per-tile mask laid out along each tile's last axis, to broadcast over ``tiled`` (a contiguous
    inner run per row of tiles multiplies several times faster than a stride-0 one)."""
    mask = keep.to(tiled.dtype).unsqueeze(-1).expand(*keep.shape, tiled.shape[-1]).contiguous()
    axis = _rows_axis(tiled)
    return mask if axis is None else mask.unsqueeze(axis)


def untile(tiled: torch.Tensor, like: torch.Tensor, tokens: bool) -> torch.Tensor:
    """Tiles back in the shape of the input ``like``, padding cut off."""
    if tokens:
        g, rows, bh, cols, bw = tiled.shape
        return tiled.reshape(g, rows * bh, cols * bw)[:, : like.shape[-2], : like.shape[-1]].reshape(like.shape)
    if like.dim() == 4:
        n, c, rows, bh, cols, bw = tiled.shape
        return tiled.reshape(n, c, rows * bh, cols * bw)[:, :, : like.shape[2], : like.shape[3]]
    return tiled.reshape(like.shape[0], -1)[:, : like[0].numel()].reshape(like.shape)


def sparsify(x: torch.Tensor, threshold: torch.Tensor | float, counts: torch.Tensor, block: tuple[int, int],
             tokens: bool, mask: bool = True) -> torch.Tensor:
    """``x`` with every tile whose magnitude is below ``threshold`` set to zero (``mask`` false: ``x`` itself);
    adds the tiles, the tiles already zero and the tiles below the threshold to ``counts``, on the device."""
    tiled = tiles(x, block, tokens)
    mags = magnitudes(tiled)
    keep = mags >= threshold
    counts[0] += mags.numel()
    counts[1] += (mags == 0).sum()
    counts[2] += keep.numel() - keep.sum()
    return untile(tiled * spread(keep, tiled), x, tokens) if mask else x


FUSED_SPARSIFY = Fused(sparsify)


class BlockSparsifier:
    """A forward pre-hook that zeroes sub-threshold tiles of a layer's input and counts tiles (``linear``: the
    input of a Linear layer, tiled tokens x features): one fused function on a GPU (:data:`FUSED_SPARSIFY`, the
    threshold a tensor there); eager elsewhere, where a zero threshold only counts."""

    def __init__(self, block: tuple[int, int], device: torch.device, linear: bool = False):
        self.block = block
        self.linear = linear
        self.counts = torch.zeros(3, dtype=torch.long, device=device)  # tiles, already zero, below the threshold
        self.total, self.already, self.below = self.counts.unbind()  # views
        self._threshold = torch.zeros((), device=device)
        self.threshold = 0.0

    @property
    def threshold(self) -> float:
        return self._value

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._value = float(value)
        self._threshold.fill_(self._value)

    def reset(self) -> None:
        self.counts.zero_()

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple | None:
        x = inputs[0]
        tokens = self.linear and x.dim() >= 3
        if FUSED_SPARSIFY.active(x):
            return (FUSED_SPARSIFY(x, self._threshold, self.counts, self.block, tokens), *inputs[1:])
        masked = self.threshold > 0.0
        out = sparsify(x, self.threshold, self.counts, self.block, tokens, masked)
        return (out, *inputs[1:]) if masked else None


class SparsityProblem(Problem):
    """Genes are threshold step indices (or continuous thresholds), one per target layer input."""

    name = "sparsity_problem"
    cost_name = "zero_blocks_per_sample"
    cost_unit = "created zero blocks per sample"
    maximize_cost = True

    def __init__(self, model: nn.Module, layers: list[LayerInfo], spec: WorkloadSpec):
        super().__init__(model, layers, spec)
        extra = spec.exploration.extra_args
        device = next(model.parameters()).device
        self.steps = threshold_values(extra)
        self.limit = extra.threshold_limit
        self.block_shape = extra.block_shape
        self.hooks = [BlockSparsifier(self.block_shape, device, layer.kind == "Linear") for layer in layers]
        self.handles = [
            model.get_submodule(layer.name).register_forward_pre_hook(hook) for layer, hook in zip(layers, self.hooks)
        ]

    @property
    def gene_names(self) -> list[str]:
        return [f"{name}.input" for name in self.layer_names]

    @property
    def integer(self) -> bool:
        return self.steps is not None

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.layers)
        upper = self.limit if self.steps is None else len(self.steps) - 1
        return np.zeros(n), np.full(n, float(upper))

    def decode(self, genome: np.ndarray) -> np.ndarray:
        genome = np.asarray(genome, dtype=float)
        if self.steps is None:
            return np.clip(genome, 0.0, self.limit)
        return self.steps[np.clip(np.rint(genome).astype(int), 0, len(self.steps) - 1)]

    def encode(self, params: np.ndarray, source: str) -> np.ndarray:
        """Thresholds from 0 to ``threshold_limit``; with discrete steps, the lowest step at or above each."""
        params = np.asarray(params, dtype=float)
        wrong = [v for v in params if not 0.0 <= v <= self.limit]
        if wrong:
            raise UserError(f"{source}: value {wrong[0]:g} is not a threshold from 0 to threshold_limit "
                            f"{self.limit:g}.")
        if self.steps is None:
            return params.copy()
        return np.minimum(np.searchsorted(self.steps, params), len(self.steps) - 1).astype(float)

    def neutral_genome(self) -> np.ndarray:
        return np.zeros(len(self.layers))

    def settings(self, genome: np.ndarray) -> dict:
        """Per layer: the input threshold and the tile (width, height)."""
        height, width = self.block_shape
        return {"sparsity": [{"layer": name, "threshold": float(t), "block_width": width, "block_height": height}
                             for name, t in zip(self.layer_names, self.decode(genome))]}

    def configure(self, genome: np.ndarray | None) -> None:
        thresholds = np.zeros(len(self.hooks)) if genome is None else self.decode(genome)
        for hook, t in zip(self.hooks, thresholds):
            hook.threshold = float(t)
            hook.reset()

    def blocks_per_sample(self) -> float:
        return float(sum(tiles_per_sample(layer.input_shape, self.block_shape, layer.kind == "Linear")
                         for layer in self.layers))

    def read_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer: tiles seen, tiles already zero, tiles newly zeroed since the last ``configure``."""
        stacked = torch.stack([h.counts for h in self.hooks]).cpu().numpy()
        total, already, below = stacked[:, 0], stacked[:, 1], stacked[:, 2]
        return total, already, below - np.minimum(below, already)

    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        return float(np.sum(blocks_created)) / max(samples, 1)

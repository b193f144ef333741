"""Small vision transformers for MNIST (1x28x28) that reach their attention in the three ways users' models do,
named in workloads as ``attention_models:tiny_vit`` (the tests folder is on the path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WindowAttention(nn.Module):
    """Attention as torchvision's Swin writes it: its ``qkv`` and ``proj`` layers are never called, their weights
    go to ``F.linear``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).reshape(n, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, dim)
        return F.linear(out, self.proj.weight, self.proj.bias)


class Block(nn.Module):
    """Pre-norm attention and MLP, with nn.MultiheadAttention (``mha``) or :class:`WindowAttention`."""

    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        self.kind = kind
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True) if kind == "mha" else WindowAttention(
            dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + (self.attention(y, y, y, need_weights=False)[0] if self.kind == "mha" else self.attention(y))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """4x4 patches of a 28x28 digit (49 tokens) and a class token, ``depth`` blocks, a linear head. ``kind``:
    ``mha`` (nn.MultiheadAttention in its own blocks), ``encoder`` (nn.TransformerEncoder, whose layers torch runs
    through its fused kernel in eval mode) or ``functional`` (:class:`WindowAttention`)."""

    def __init__(self, kind: str = "mha", dim: int = 32, heads: int = 4, depth: int = 2, num_classes: int = 10):
        super().__init__()
        self.patches = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, 50, dim) * 0.02)
        if kind == "encoder":
            self.blocks = nn.TransformerEncoder(nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0,
                                                                           batch_first=True), depth)
        else:
            self.blocks = nn.Sequential(*(Block(dim, heads, kind) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def tiny_vit(kind: str = "mha", num_classes: int = 10) -> TinyViT:
    return TinyViT(kind, num_classes=num_classes)


class CausalLM(nn.Module):
    """A small causal language model: token embedding, ``depth`` pre-norm blocks of causal nn.MultiheadAttention and
    an MLP, and a head tied to the embedding."""

    def __init__(self, vocab: int = 16, dim: int = 32, heads: int = 4, depth: int = 2, length: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, "mha") for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[:, : tokens.shape[1]]
        mask = self.mask[: tokens.shape[1], : tokens.shape[1]]
        for block in self.blocks:
            y = block.norm1(x)
            x = x + block.attention(y, y, y, attn_mask=mask, is_causal=True, need_weights=False)[0]
            x = x + block.mlp(block.norm2(x))
        return self.head(self.norm(x))


def causal_lm(vocab: int = 16) -> CausalLM:
    return CausalLM(vocab)


def counting_sequences(path=None, split=None, vocab: int = 16, length: int = 12, count: int = 96):
    """Sequences that count up in steps of 1 to 3 modulo ``vocab``: (tokens, the next token at every position)."""
    generator = torch.Generator().manual_seed({"train": 0, "calibrate": 1}.get(split, 2))
    start = torch.randint(0, vocab, (count, 1), generator=generator)
    step = torch.randint(1, 4, (count, 1), generator=generator)
    tokens = (start + step * torch.arange(length + 1)) % vocab
    return torch.utils.data.TensorDataset(tokens[:, :-1], tokens[:, 1:])


def token_accuracy(outputs: torch.Tensor, labels: torch.Tensor):
    """Next-token accuracy over every position: (correct, tokens)."""
    return (outputs.argmax(-1) == labels).sum(), labels.numel()

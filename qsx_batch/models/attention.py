"""nn.MultiheadAttention with its projections called as layers, so that they are quantized and sparsified like every
other Linear.

torch's MultiheadAttention keeps Q, K and V as one bare parameter (``in_proj_weight``) and runs its projections
inside ``F.multi_head_attention_forward`` (or a fused kernel in eval mode), so no quantizer, hook or profile ever sees
them. :func:`expose_attention` turns every MultiheadAttention of a model into :class:`ProjectedAttention` (its class
swapped in place: same parameters, same state dict) with three child layers ``in_proj_q``, ``in_proj_k`` and
``in_proj_v`` that compute ``F.linear`` on their rows of the parameter, and it calls ``out_proj`` as a module. The
rest of the computation (masks, bias_k/v, zero attention, dropout, head averaging) follows torch's own
``multi_head_attention_forward`` step by step. TransformerEncoderLayer's and TransformerEncoder's fused paths, which
bypass every submodule, are turned off for the layers that hold one.

With ``matmuls``, the two products of activations, Q x K^T and softmax x V, become layers as well
(:class:`AttentionMatmul` ``q_times_k`` and ``p_times_v``), computed as torch computes them when it returns the
attention weights, instead of by ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ROLES = ("q", "k", "v")


class InProjection(nn.Module):
    """One of Q, K, V of a MultiheadAttention: ``F.linear`` on its rows of the attention's ``in_proj_weight`` (or on
    its ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``). It owns no parameter: the state dict stays torch's."""

    def __init__(self, attention: nn.MultiheadAttention, role: str):
        super().__init__()
        object.__setattr__(self, "_attention", attention)  # not a child module: no cycle in named_modules
        self.role = role
        self.in_features = {"q": attention.embed_dim, "k": attention.kdim, "v": attention.vdim}[role]
        self.out_features = attention.embed_dim

    def _rows(self) -> slice:
        index = ROLES.index(self.role)
        return slice(index * self.out_features, (index + 1) * self.out_features)

    def parameter(self) -> nn.Parameter:
        """The attention's parameter that holds this projection's weight."""
        attention = self._attention
        if attention._qkv_same_embed_dim:
            return attention.in_proj_weight
        return getattr(attention, f"{self.role}_proj_weight")

    @property
    def weight(self) -> torch.Tensor:
        attention = self._attention
        return attention.in_proj_weight[self._rows()] if attention._qkv_same_embed_dim else self.parameter()

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self._attention.in_proj_bias
        return None if bias is None else bias[self._rows()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rows of the attention's weight"


class AttentionMatmul(nn.Module):
    """A product of two activations in attention, ``torch.bmm(a, b)``: Q x K^T (a: the scaled queries, b: the
    keys transposed) or softmax x V (a: the attention weights, b: the values). A layer like any other: ``a`` is
    its input, ``b`` takes the place of a weight."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: not attended) as 0/-inf to add to the scores; a float mask as it is."""
    if mask is None or mask.is_floating_point():
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


class ProjectedAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention computing the same outputs with ``in_proj_q/k/v`` and ``out_proj`` called as layers."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention).")
        batched = query.dim() == 3
        if not batched:
            query, key, value = (x.unsqueeze(0) for x in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # (N, L, E): every projection sees samples first, as a Linear layer of a CNN does
        q, k, v = self.in_proj_q(query), self.in_proj_k(key), self.in_proj_v(value)
        bsz, tgt_len, _ = q.shape
        heads, head_dim = self.num_heads, self.embed_dim // self.num_heads
        attn_mask = _additive(attn_mask, q.dtype)
        key_padding_mask = _additive(key_padding_mask, q.dtype)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.transpose(0, 1).expand(bsz, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.transpose(0, 1).expand(bsz, 1, -1)], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q, k, v = (x.reshape(bsz, x.shape[1], heads, head_dim).transpose(1, 2).reshape(bsz * heads, x.shape[1],
                                                                                         head_dim) for x in (q, k, v))
        if self.add_zero_attn:
            zeros = torch.zeros(bsz * heads, 1, head_dim, dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.shape[1]
        if key_padding_mask is not None:
            padding = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1,
                                                                                                   src_len)
            attn_mask = padding if attn_mask is None else attn_mask + padding
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        products = "q_times_k" in self._modules
        if need_weights or products:
            scaled = q * math.sqrt(1.0 / float(head_dim))
            if products:
                scores = self.q_times_k(scaled, k.transpose(-2, -1))
                scores = scores if attn_mask is None else scores + attn_mask
            else:
                scores = (torch.baddbmm(attn_mask, scaled, k.transpose(-2, -1)) if attn_mask is not None
                          else torch.bmm(scaled, k.transpose(-2, -1)))
            weights = F.softmax(scores, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = self.p_times_v(weights, v) if products else torch.bmm(weights, v)
            if need_weights:
                weights = weights.view(bsz, heads, tgt_len, src_len)
                weights = weights.mean(dim=1) if average_attn_weights else weights
                weights = weights if batched else weights.squeeze(0)
            else:
                weights = None
        else:
            if attn_mask is not None and attn_mask.shape[0] == 1:
                attn_mask = attn_mask.unsqueeze(0)
            elif attn_mask is not None:
                attn_mask = attn_mask.view(bsz, heads, -1, src_len)
            out = F.scaled_dot_product_attention(q.view(bsz, heads, tgt_len, head_dim),
                                                 k.view(bsz, heads, src_len, head_dim),
                                                 v.view(bsz, heads, src_len, head_dim), attn_mask, dropout_p)
            out = out.reshape(bsz * heads, tgt_len, head_dim)
        out = out.view(bsz, heads, tgt_len, head_dim).transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _no_fused_path(module: nn.Module, inputs: tuple) -> None:
    """A forward pre-hook that changes nothing: torch takes TransformerEncoderLayer's fused kernel, which calls no
    submodule, only for layers without hooks."""
    return None


def expose_attention(model: nn.Module, matmuls: bool = False) -> int:
    """Swap every nn.MultiheadAttention of ``model`` for :class:`ProjectedAttention` in place (``matmuls``: with
    its two :class:`AttentionMatmul` layers) and keep Transformer encoders off their fused paths; return how many
    attentions were swapped."""
    swapped = 0
    for module in list(model.modules()):
        if type(module) is nn.MultiheadAttention:
            module.__class__ = ProjectedAttention
            others = dict(module._modules)
            module._modules.clear()  # layers (and genes) in the order they compute
            for role in ROLES:
                module.add_module(f"in_proj_{role}", InProjection(module, role))
            if matmuls:
                module.q_times_k, module.p_times_v = AttentionMatmul(), AttentionMatmul()
            module._modules.update(others)
            swapped += 1
        elif isinstance(module, nn.TransformerEncoderLayer):
            module.register_forward_pre_hook(_no_fused_path)
        elif isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = False  # nested tensors come only with the fused path
    return swapped

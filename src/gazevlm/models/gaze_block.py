"""The gaze-regularised attention block: between the frozen vision encoder and the Perceiver/projector.

A query token per frame attends over that frame's patch tokens (keys/values per frame). The query
starts from the RGB features only: a learned projection of the mean of all visual tokens of the
sequence ("global", the paper's choice) or of the frame ("frame", Table 19). The last layer's
attention over the patches, heads combined, is what the gaze loss regularises; it is computed once
here and returned, so the loss reuses it. Gaze never enters this module.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from open_flamingo.src.helpers import FeedForward
from torch import nn

QUERIES = ("global", "frame")
OUTPUTS = ("pooled", "pooled_lm", "reweighted", "attended")
HEAD_REDUCTIONS = ("mean", "max")


class GazeAttentionLayer(nn.Module):
    """One query token per frame attends over that frame's patch tokens; returns the attention too.

    A standard multi-head cross-attention (to_q/to_k/to_v/to_out, pre-norm on the query, then a
    feed-forward). The patch tokens get no second LayerNorm: they leave the vision encoder through its
    final LayerNorm (ln_post). With a single query per frame, keys and values of the P patch tokens never
    need to exist: q . (W_k x) = (W_k^T q) . x and sum_p a_p W_v x_p = W_v (sum_p a_p x_p). That turns a
    P x D x D projection per frame into P x D x heads, which keeps the block cheap next to the Perceiver.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int = 2, attention_only: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"gaze block: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.norm_query = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        # the last layer of the "reweighted" block only needs its attention: no parameters left unused
        self.attention_only = attention_only
        if not attention_only:
            self.to_v = nn.Linear(dim, dim, bias=False)
            self.to_out = nn.Linear(dim, dim, bias=False)
            self.ff = FeedForward(dim, mult=ff_mult) if ff_mult else None

    def forward(self, query: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (N, D), patches (N, P, D) -> (new query (N, D), attention (N, H, P) in float32)."""
        n, p, d = patches.shape
        h = self.heads
        q = self.to_q(self.norm_query(query)).view(n, h, d // h)
        qk = torch.einsum("nhe,hed->nhd", q, self.to_k.weight.view(h, d // h, d))
        # float32 logits and softmax: this attention is the distribution the KL compares with gaze
        logits = torch.bmm(qk.float(), patches.float().transpose(1, 2)) * self.scale  # (N, H, P)
        attn = logits.softmax(dim=-1)
        if self.attention_only:
            return query, attn
        mixed = torch.bmm(attn.to(patches.dtype), patches)  # (N, H, D)
        out = torch.einsum("nhd,hed->nhe", mixed, self.to_v.weight.view(h, d // h, d)).reshape(n, d)
        query = query + self.to_out(out)
        if self.ff is not None:
            query = query + self.ff(query)
        return query, attn


class PatchLayer(nn.TransformerEncoderLayer):
    """A pre-norm transformer layer over one frame's patch tokens (ReLU feed-forward, no dropout).

    torch's own layer with a lean forward: its parameters, initialisation and outputs are exactly
    nn.TransformerEncoderLayer's, its training step a fifth cheaper on CPU. Through nn.MultiheadAttention
    the fused (3D, D) input projection is split by indexing, and its backward zero-fills and sums a
    (3, N, H, P, D/H) buffer per layer; three slices of the weight give q, k, v without it.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int):
        super().__init__(dim, heads, ff_dim, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,  # type: ignore[override]
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """src (N, P, D) -> (N, P, D). Every patch sees every patch of its frame: no masks."""
        if src_mask is not None or src_key_padding_mask is not None or is_causal:
            raise ValueError("PatchLayer attends over all of a frame's patches: masks are not supported")
        n, p, d = src.shape
        h = self.self_attn.num_heads
        attn = self.self_attn
        y = self.norm1(src)
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q, k, v = (F.linear(y, w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]).view(n, p, h, d // h).transpose(1, 2)
                   for i in range(3))
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, p, d)
        x = src + attn.out_proj(mixed)
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class BlockOutput(NamedTuple):
    features: torch.Tensor            # (B, T, P or P + 1, D): what the Perceiver (or cross-attention) reads
    tokens: torch.Tensor | None       # (B, T, D) to append after the Perceiver ("pooled_lm"), else None
    attention: torch.Tensor           # (B, T, P) float32: the regularised distribution


class GazeBlock(nn.Module):
    """block_layers GazeAttentionLayers between the frozen encoder and the Perceiver.

    patch_layers > 0 puts that many trainable transformer layers over each frame's patch tokens first;
    the block attends over their output and passes it on in place of the encoder's tokens. Through them
    the gaze loss shapes the features themselves, not only where the query looks: on the tiny world's
    validation split the VLM's gaze - base future object accuracy went from +0.009 (no layer) to +0.045
    (two; README "Where the gaze gain is lost").

    output "pooled":     each frame's attended token is appended to that frame's patch tokens, and the
                         Perceiver reads P + 1 tokens per frame (the block output feeds the Perceiver,
                         as in the paper's figure);
    output "pooled_lm":  the same tokens (layer-normalised) join the Perceiver's output latents, so the
                         LM's cross-attention reads them directly; the Perceiver sees what it sees in
                         the base run, which makes this the cheapest variant;
    output "reweighted": each patch token is scaled by P * its attention (uniform attention = identity);
    output "attended":   each frame's patch tokens averaged with the regularised attention join that frame's
                         patches, as in "pooled". The token is only what the block looked at: the query's
                         residual, which starts from the mean of the whole window, never leaves the block.
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 8, query: str = "global",
                 output: str = "pooled", head_reduce: str = "mean", ff_mult: int = 2, norm_patches: bool = False,
                 patch_layers: int = 0):
        super().__init__()
        for name, value, allowed in (("query", query, QUERIES), ("block_output", output, OUTPUTS),
                                     ("head_reduce", head_reduce, HEAD_REDUCTIONS)):
            if value not in allowed:
                raise ValueError(f"params.model.{name}: {value!r} is not one of {allowed}")
        if layers < 1:
            raise ValueError(f"params.model.block_layers must be >= 1, got {layers}")
        if patch_layers < 0:
            raise ValueError(f"params.model.block_patch_layers must be >= 0, got {patch_layers}")
        self.query_type, self.output, self.head_reduce = query, output, head_reduce
        self.patch_layers = nn.ModuleList(PatchLayer(dim, heads, max(ff_mult, 1) * dim) for _ in range(patch_layers))
        self.query_proj = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(
            GazeAttentionLayer(dim, heads, ff_mult, attention_only=(output in ("reweighted", "attended") and i == layers - 1))
            for i in range(layers))
        # the Perceiver's latents leave through a LayerNorm: appended tokens get one too
        self.norm_out = nn.LayerNorm(dim) if output == "pooled_lm" else None
        # projector backbones read an inner layer of the tower (LLaVA: the penultimate; InternViT's last has
        # no final norm): the block normalises the patches it attends over; what it passes on is untouched
        self.norm_patches = nn.LayerNorm(dim) if norm_patches else None

    def forward(self, patches: torch.Tensor) -> BlockOutput:
        """patches (B, T, P, D): the frozen encoder's patch tokens of each frame."""
        b, t, p, d = patches.shape
        if len(self.patch_layers):
            flat = patches.reshape(b * t, p, d)
            for layer in self.patch_layers:
                flat = layer(flat)
            patches = flat.view(b, t, p, d)
        seen = self.norm_patches(patches) if self.norm_patches is not None else patches
        if self.query_type == "global":
            query = self.query_proj(seen.mean(dim=(1, 2)))[:, None].expand(b, t, d)
        else:
            query = self.query_proj(seen.mean(dim=2))
        query = query.reshape(b * t, d)
        flat = seen.reshape(b * t, p, d)
        for layer in self.layers:
            query, attn = layer(query, flat)
        if self.head_reduce == "mean":
            attention = attn.mean(dim=1)
        else:  # max over heads is not a distribution: renormalise it over the patches
            attention = attn.amax(dim=1)
            attention = attention / attention.sum(dim=-1, keepdim=True)
        attention = attention.view(b, t, p)
        pooled = query.view(b, t, d)
        if self.output == "pooled":
            return BlockOutput(torch.cat([patches, pooled.unsqueeze(2)], dim=2), None, attention)
        if self.output == "pooled_lm":
            return BlockOutput(patches, self.norm_out(pooled), attention)
        if self.output == "attended":
            looked_at = torch.einsum("btp,btpd->btd", attention.to(patches.dtype), patches)
            return BlockOutput(torch.cat([patches, looked_at.unsqueeze(2)], dim=2), None, attention)
        return BlockOutput(patches * (attention * p).unsqueeze(-1).to(patches.dtype), None, attention)

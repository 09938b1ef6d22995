"""A vision transformer whose patch tokens attend only to their neighbourhood (the tiny preset's encoder).

Why: the tiny preset's encoder is pretrained on a few thousand keyframes and captions. With global
self-attention, two layers were enough for every patch token to carry the whole caption (a linear probe
read the object in the gazed patch no better than from any patch), so pooling the tokens where people
looked told the model nothing new. Restricting attention to a k x k window of patches keeps each token
about its own part of the frame and its surroundings (an object and the hand next to it), as the patch
tokens of a large pretrained CLIP are. The class token still attends to every patch.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer


def local_attention_mask(grid: int, window: int) -> torch.Tensor:
    """Additive mask (1 + grid^2, 1 + grid^2) for [class token, patches in row-major order]: a patch
    sees the patches within window // 2 cells in both directions (not the class token); the class
    token sees everything. 0 where attention is allowed, -inf elsewhere."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the attention window must be an odd number of patches, got {window}")
    idx = torch.arange(grid * grid)
    row, col = idx // grid, idx % grid
    near = ((row[:, None] - row[None]).abs() <= window // 2) & ((col[:, None] - col[None]).abs() <= window // 2)
    mask = torch.full((1 + grid * grid, 1 + grid * grid), float("-inf"))
    mask[0] = 0.0
    mask[1:, 1:] = torch.where(near, 0.0, float("-inf"))
    return mask


class LocalVisionTransformer(VisionTransformer):
    """open_clip's VisionTransformer with its transformer run under local_attention_mask."""

    def __init__(self, *args, window: int, **kwargs):
        super().__init__(*args, **kwargs)
        grid = self.grid_size[0]
        if self.grid_size[0] != self.grid_size[1]:
            raise ValueError(f"local attention needs a square patch grid, got {self.grid_size}")
        self.register_buffer("attn_mask", local_attention_mask(grid, window), persistent=False)
        for block in self.transformer.resblocks:
            block.attention = types.MethodType(_batched_attention, block)

    def forward(self, x: torch.Tensor):
        x = self._embeds(x)
        x = self.transformer(x, attn_mask=self.attn_mask.to(x.dtype))
        pooled, tokens = self._pool(x)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled


def _batched_attention(block, q_x: torch.Tensor, k_x=None, v_x=None, attn_mask: torch.Tensor | None = None):
    """Self-attention of open_clip's ResidualAttentionBlock on (B, L, D), with its own weights.

    Why not its nn.MultiheadAttention: given a mask, that takes its sequence-first slow path, whose
    products change in the last bit with the number of frames in a call (2 or 3 frames differ from 1 or
    4), so features encoded once per frame would not equal features encoded a window at a time. One
    projection of the (B, L, D) batch and scaled_dot_product_attention do not depend on it."""
    if k_x is not None or v_x is not None:
        raise ValueError("the local encoder's blocks attend to themselves only")
    attn = block.attn
    b, n, d = q_x.shape
    heads = attn.num_heads
    qkv = F.linear(q_x, attn.in_proj_weight, attn.in_proj_bias).view(b, n, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, d / heads)
    mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))

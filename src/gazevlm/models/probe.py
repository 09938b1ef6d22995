"""The backbone's own attention over each frame's patches, for comparing models without a gaze block.

openflamingo: the Perceiver's last layer, latents -> patch tokens, mean over heads and latents.
openflamingo_noperceiver: the last gated cross-attention layer, text tokens after the <image> token
(and inside attention_mask) -> visual tokens, mean over heads and those tokens.
lavila: the Perceiver's (one) layer, as openflamingo.
internvl / llava_next: the LM's last self-attention layer, text tokens after the window's media tokens ->
the media tokens, mean over heads and those tokens; each LM token's weight is shared evenly by the patches
it was made from (2 x 2 by pixel shuffle or pooling), the pooled gaze-block token is left out (LMTextProbe).
Either way the weights on each frame's P patch tokens are renormalised to a distribution per frame
(B, T, P). A forward hook records the module's inputs and the attention is recomputed from the
module's own projections, so the forward pass itself is untouched. Only used when asked for.
"""
from __future__ import annotations

import torch
import sys

from open_flamingo.src.helpers import MaskedCrossAttention, PerceiverAttention, PerceiverResampler
from torch import nn


class _HookProbe:
    """A context manager that hooks `self.module`'s forward while it is open; `attention` is the result."""

    module: nn.Module
    attention: torch.Tensor | None = None
    _handle = None

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        raise NotImplementedError


class BackboneAttentionProbe(_HookProbe):
    def __init__(self, flamingo: nn.Module, n_frames: int, n_patches: int, attention_mask: torch.Tensor | None,
                 tokens_at_end: bool = False):
        self.n_frames, self.n_patches, self.attention_mask = n_frames, n_patches, attention_mask
        # "pooled_lm" appends one token per frame after all visual tokens (seen by cross-attention only)
        self.tokens_at_end = tokens_at_end
        self.attention: torch.Tensor | None = None
        if isinstance(flamingo.perceiver, PerceiverResampler):
            self.module = flamingo.perceiver.layers[-1][0]
        else:
            xattn = [layer for layer in flamingo.lang_encoder.gated_cross_attn_layers if layer is not None]
            self.module = xattn[-1].attn

    @torch.no_grad()
    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        if isinstance(module, PerceiverAttention):
            weights = _perceiver_weights(module, *args)
        else:
            weights = _cross_attention_weights(module, args[0], args[1], kwargs.get("media_locations"),
                                               self.attention_mask)
            if self.tokens_at_end:
                weights = weights[:, : -self.n_frames]
        b = weights.shape[0]
        per_frame = weights.reshape(b, self.n_frames, -1)[..., : self.n_patches]  # drop a "pooled" token
        self.attention = per_frame / per_frame.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).movedim(-2, 1)  # (b, ..., n, h*d) -> (b, h, ..., n, d)


def _perceiver_weights(module: PerceiverAttention, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """x (b, 1, N, D) media tokens, latents (b, 1, n, D) -> (b, N) mean attention on media tokens."""
    x, lat = module.norm_media(x), module.norm_latents(latents)
    q = _heads(module.to_q(lat), module.heads) * module.scale
    k = _heads(module.to_kv(torch.cat((x, lat), dim=-2)).chunk(2, dim=-1)[0], module.heads)
    attn = (q.float() @ k.float().transpose(-1, -2)).softmax(dim=-1)  # (b, h, 1, n, N + n)
    return attn[..., : x.shape[-2]].mean(dim=(1, 3))[:, 0]


def _cross_attention_weights(module: MaskedCrossAttention, x: torch.Tensor, media: torch.Tensor,
                             media_locations: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Text x (b, L, D), media (b, 1, N, D) -> (b, N) mean attention of the text after the media token."""
    q = _heads(module.to_q(module.norm(x)), module.heads) * module.scale
    k = _heads(module.to_kv(media.flatten(1, 2)).chunk(2, dim=-1)[0], module.heads)
    attn = (q.float() @ k.float().transpose(-1, -2)).softmax(dim=-1).mean(dim=1)  # (b, L, N)
    after_media = media_locations.cumsum(dim=-1) > 0
    if attention_mask is not None:
        after_media = after_media & attention_mask.bool()
    w = after_media.to(attn.dtype).unsqueeze(-1)
    return (attn * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)


class LMTextProbe(_HookProbe):
    """The backbone attention of a projector VLM (GazeProjectorVLM): recomputed from the last LM layer's
    own q/k projections and rotary embeddings in a forward hook, so the LM keeps its SDPA/flash kernel."""

    def __init__(self, vlm: nn.Module, n_frames: int, n_patches: int, token_patches: torch.Tensor):
        self.vlm, self.n_frames, self.n_patches = vlm, n_frames, n_patches
        self.token_patches = token_patches  # (K, r): the patches each LM grid token was made from
        self.module = vlm.language_model.layers[-1].self_attn

    @torch.no_grad()
    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        where, n_media, mask = self.vlm.last_splice
        hidden = args[0] if args else kwargs["hidden_states"]
        weights = _lm_text_to_media(module, hidden, kwargs["position_embeddings"], mask, where, n_media)
        b, k = weights.shape[0], self.token_patches.shape[0]
        per_token = weights.reshape(b, self.n_frames, -1)[..., :k]  # drop the pooled token, if any
        r = self.token_patches.shape[1]
        index = self.token_patches.to(per_token.device).reshape(1, 1, -1).expand(b, self.n_frames, -1)
        spread = (per_token / r).repeat_interleave(r, dim=-1)
        patches = per_token.new_zeros(b, self.n_frames, self.n_patches).scatter_add_(2, index, spread)
        self.attention = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def _lm_text_to_media(attn: nn.Module, hidden: torch.Tensor, position_embeddings: tuple, mask: torch.Tensor,
                      where: torch.Tensor, n_media: int) -> torch.Tensor:
    """(b, N) mean attention of the text after the media span onto the span, for a Llama/Qwen2 layer."""
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    b, length, _ = hidden.shape
    q = attn.q_proj(hidden).view(b, length, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, length, -1, attn.head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    q, k = rotary(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling  # (b, h, L, L)
    pos = torch.arange(length, device=hidden.device)
    allowed = (pos[None, :] <= pos[:, None])[None] & mask.bool()[:, None, :]
    attn_w = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1).mean(dim=1)  # (b, L, L)
    span = torch.arange(n_media, device=hidden.device)
    out = []
    for i, m in enumerate(where.tolist()):
        rows = (pos >= m + n_media) & mask[i].bool()
        out.append(attn_w[i, rows][:, m + span].mean(dim=0))
    return torch.stack(out)

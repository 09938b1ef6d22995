"""Adapting open_flamingo 2.0.1 (written for transformers 4.28) to the pinned transformers 5.23.

Nothing is copied or patched globally: the language model gets a subclass of open_flamingo's own
FlamingoLMMixin (via open_flamingo's extend_instance), whose layers are a subclass of its FlamingoLayer.
Findings, each covered by tests/test_models_compat.py for OPT, Llama, GPT-NeoX and GPT-2:

1. generate() fails: transformers 5 calls the model's forward without `attention_mask`, which
   FlamingoLMMixin.forward requires positionally (TypeError). Fix: default it to None.
2. FlamingoLayer.forward forwards only keyword arguments to the decoder layer; a decoder that passes
   anything positionally (mask, position ids) would break. Fix: pass *args through.
3. open_flamingo does not know where GPT-2 keeps its decoder layers (its table has GPT-J, not GPT-2):
   `transformer.h`, given here.
4. Decoder layers in transformers 5 return a tensor, not a tuple; FlamingoLayer returns whatever the
   decoder returns, so this needs no change (checked by the same tests).
Multi-frame media (F > 1) is not a transformers issue; GazeFlamingo in flamingo.py handles it.
"""
from __future__ import annotations

import torch
from open_flamingo.src.factory import _infer_decoder_layers_attr_name
from open_flamingo.src.flamingo_lm import FlamingoLayer, FlamingoLMMixin
from open_flamingo.src.utils import extend_instance
from torch import nn

# LM families checked end to end (forward, greedy and beam generate with the KV cache).
SUPPORTED_LM_FAMILIES = ("opt", "llama", "gpt_neox", "gpt2")
# model_type -> decoder layer list, for families open_flamingo's own table misses
_DECODER_LAYERS = {"gpt2": "transformer.h"}


class CompatFlamingoLayer(FlamingoLayer):
    """FlamingoLayer that passes positional arguments through to the decoder layer as well."""

    def forward(self, lang_x: torch.Tensor, *args, **kwargs):
        if self.gated_cross_attn_layer is not None:
            if not self.is_conditioned():
                raise ValueError("Flamingo layer: condition vis_x and media_locations before the forward pass")
            lang_x = self.gated_cross_attn_layer(
                lang_x, self.vis_x, media_locations=self.media_locations, use_cached_media=self.use_cached_media)
        return self.decoder_layer(lang_x, *args, **kwargs)


class CompatFlamingoLMMixin(FlamingoLMMixin):
    """FlamingoLMMixin whose forward accepts a missing attention_mask and whose layers pass *args."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs):
        if input_ids is None:
            raise ValueError("Flamingo language model: input_ids are required (media tokens are found in them)")
        return FlamingoLMMixin.forward(self, input_ids, attention_mask, **kwargs)

    def init_flamingo_layers(self, gradient_checkpointing: bool) -> None:
        self._set_decoder_layers(nn.ModuleList(
            CompatFlamingoLayer(xattn, decoder, gradient_checkpointing)
            for xattn, decoder in zip(self.gated_cross_attn_layers, self.old_decoder_blocks)
        ))


def lm_family(lang_encoder: nn.Module) -> str:
    """The model_type of a transformers causal LM (opt, llama, gpt_neox...)."""
    return getattr(lang_encoder.config, "model_type", type(lang_encoder).__name__)


def adapt_language_model(lang_encoder: nn.Module, decoder_layers_attr_name: str | None = None) -> nn.Module:
    """Turn a transformers causal LM into an open_flamingo FlamingoLM in place (before Flamingo(...))."""
    family = lm_family(lang_encoder)
    if family not in SUPPORTED_LM_FAMILIES:
        raise ValueError(f"language model family {family!r} is not supported by gazevlm's open_flamingo "
                         f"adapter (tested: {SUPPORTED_LM_FAMILIES})")
    extend_instance(lang_encoder, CompatFlamingoLMMixin)
    if decoder_layers_attr_name is None:
        decoder_layers_attr_name = _DECODER_LAYERS.get(family) or _infer_decoder_layers_attr_name(lang_encoder)
    lang_encoder.set_decoder_layers_attr_name(decoder_layers_attr_name)
    return lang_encoder

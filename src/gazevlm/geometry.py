"""The vision encoder's input geometry per preset: what the heatmap stage must resize/crop to.

Keyed by preset name only (every backbone's tiny preset shares one geometry), so switching backbones at
the tiny size reuses the heatmap stage's shards."""

from __future__ import annotations

# preset -> (image_size, patch_size); the patch grid is image_size // patch_size per side.
_GEOMETRY = {
    "tiny": (128, 16),  # 8 x 8 patches of 16 px: offline ViT built from a config (at 64 px the 8-px sprites
    # were hard to tell apart: world ceiling on activity 0.07 vs 0.17 at 128 px)
    "paper": (224, 14),  # CLIP ViT-L/14: 16 x 16 patches
    "lavila-gpt2-xl": (336, 14),  # CLIP ViT-L/14-336: 24 x 24
    "internvl2_5-1b": (448, 14),  # InternViT-300M-448px: 32 x 32 (16 x 16 LM tokens after pixel shuffle)
    "internvl3-1b": (448, 14),
    "llava-next-vicuna-7b": (336, 14),  # CLIP ViT-L/14-336 base view: 24 x 24 (12 x 12 LM tokens after pooling)
}


def vision_geometry(preset: str) -> tuple[int, int]:
    """(image_size, patch_size) of the preset's vision encoder."""
    try:
        return _GEOMETRY[preset]
    except KeyError:
        raise KeyError(f"unknown model preset {preset!r} (have {sorted(_GEOMETRY)})") from None


def patch_grid(preset: str) -> int:
    size, patch = vision_geometry(preset)
    return size // patch

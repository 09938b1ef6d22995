"""The vision encoder's input geometry per preset: what the heatmap stage must resize/crop to."""
from __future__ import annotations

# preset -> (image_size, patch_size); the patch grid is image_size // patch_size per side.
_GEOMETRY = {
    "tiny": (64, 8),      # 8 x 8 patches: offline ViT built from a config
    "paper": (224, 14),   # CLIP ViT-L/14: 16 x 16 patches
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

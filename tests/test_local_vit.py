"""The tiny preset's vision encoder: open_clip's ViT with attention kept to each patch's neighbourhood."""

import dataclasses

import pytest
import torch
from open_clip.transformer import VisionTransformer

from gazevlm.models import presets
from gazevlm.models.local_vit import LocalVisionTransformer, local_attention_mask


def vit(cls, **kw):
    torch.manual_seed(0)
    return cls(
        image_size=64, patch_size=8, width=32, layers=2, heads=4, mlp_ratio=2.0, output_dim=32, output_tokens=True, **kw
    ).eval()


def test_mask_allows_the_window_and_the_class_token_sees_everything():
    m = local_attention_mask(4, 3)
    assert m.shape == (17, 17) and (m[0] == 0).all()  # class token row: every token
    assert torch.isinf(m[1:, 0]).all()  # patches do not read the class token
    allowed = m[1:, 1:] == 0
    assert allowed[0].nonzero().flatten().tolist() == [0, 1, 4, 5]  # corner (0, 0): 2 x 2 cells
    assert allowed[5].sum() == 9 and not allowed[5, 15]  # (1, 1): 3 x 3, not (3, 3)
    assert torch.equal(allowed, allowed.T)
    with pytest.raises(ValueError, match="odd"):
        local_attention_mask(4, 2)


def test_it_is_open_clips_vit_run_under_the_mask():
    x = torch.rand(2, 3, 64, 64)
    local, plain = vit(LocalVisionTransformer, window=3), vit(VisionTransformer)
    with torch.no_grad():
        h = plain.transformer(plain._embeds(x), attn_mask=local_attention_mask(8, 3))
        pooled, tokens = plain._pool(h)
        want = (pooled @ plain.proj, tokens)
    for got, w in zip(local(x), want, strict=False):
        torch.testing.assert_close(got, w)
    assert local.state_dict().keys() == plain.state_dict().keys()  # same weights file (mask not saved)


def test_a_patch_token_does_not_see_beyond_its_receptive_field():
    """Two layers of a 3 x 3 window: a token depends on the 5 x 5 patches around it and nothing else."""
    model = vit(LocalVisionTransformer, window=3)
    x = torch.rand(1, 3, 64, 64)
    far = x.clone()
    far[..., 48:, 48:] = torch.rand(1, 3, 16, 16)  # patches (6..7, 6..7), 6 cells from patch (0, 0)
    near = x.clone()
    near[..., 16:24, 16:24] = torch.rand(1, 3, 8, 8)  # patch (2, 2): 2 cells from patch (0, 0)
    tokens = model(x)[1][0]
    assert torch.equal(model(far)[1][0, 0], tokens[0])
    assert not torch.allclose(model(near)[1][0, 0], tokens[0])
    assert not torch.allclose(vit(VisionTransformer)(far)[1][0, 0], vit(VisionTransformer)(x)[1][0, 0])


def test_the_tiny_preset_builds_the_local_encoder_and_real_presets_do_not():
    tiny = presets.get_preset("tiny", "openflamingo")
    assert tiny.vision_window == 3
    assert isinstance(presets.build_vision_encoder(tiny).visual, LocalVisionTransformer)
    glob = dataclasses.replace(tiny, vision_window=0)
    assert type(presets.build_vision_encoder(glob).visual) is VisionTransformer
    assert presets.PRESETS["paper"].vision_window == 0


def test_a_frame_encodes_to_the_same_bits_whatever_the_batch_and_as_open_clip_attention_does():
    """The features stage encodes each frame once in large batches, training a window (2-3 frames) at a
    time: the bits must not depend on the batch size; the values are those of nn.MultiheadAttention."""
    torch.manual_seed(0)
    model = vit(LocalVisionTransformer, window=3).eval()
    x = torch.rand(9, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)[1]
        for size in (1, 2, 3, 4):
            assert torch.equal(torch.cat([model(c)[1] for c in x.split(size)]), whole), size
        for block in model.transformer.resblocks:
            del block.attention  # back to open_clip's own ResidualAttentionBlock.attention
        torch.testing.assert_close(model(x)[1], whole, rtol=1e-5, atol=1e-6)

"""gaze_kl against scipy on random distributions, masks, eps edge cases and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from scipy.stats import entropy

from gazevlm.losses import check_target, gaze_kl, total_loss

B, T, GH = 4, 5, 4
P = GH * GH


def _dirichlet(seed: int, alpha: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(P, alpha), size=(B, T))


def _reference(
    att: np.ndarray, gaze: np.ndarray, valid: np.ndarray, direction: str, reduction: str, eps: float
) -> float:
    """Independent formula: scipy's entropy (which renormalises) on eps-clamped rows, mean over valid."""
    kls = []
    for b in range(B):
        for t in range(T):
            if not valid[b, t]:
                continue
            g, a = np.maximum(gaze[b, t], eps), np.maximum(att[b, t], eps)
            kl = entropy(g, a) if direction == "gaze_to_attention" else entropy(a, g)
            kls.append(kl / P if reduction == "mean" else kl)
    return float(np.mean(kls)) if kls else 0.0


@pytest.mark.parametrize("direction", ["gaze_to_attention", "attention_to_gaze"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_scipy_with_masked_frames(direction, reduction):
    att, gaze = _dirichlet(0), _dirichlet(1)
    valid = np.random.default_rng(2).random((B, T)) > 0.3
    gaze_masked = np.where(valid[..., None], gaze, np.nan)  # invalid rows may hold anything
    got = gaze_kl(
        torch.tensor(att, dtype=torch.float32),
        torch.tensor(gaze_masked, dtype=torch.float32),
        torch.tensor(valid),
        direction=direction,
        reduction=reduction,
    )
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_reference(att, gaze, valid, direction, reduction, 1e-8), rel=1e-5)


def test_uses_rel_entr_definition_and_accepts_a_patch_grid():
    att, gaze = _dirichlet(3), _dirichlet(4)
    valid = np.ones((B, T), dtype=bool)
    expected = rel_entr(gaze, att).sum(-1).mean()
    got = gaze_kl(torch.tensor(att), torch.tensor(gaze).reshape(B, T, GH, GH), torch.tensor(valid))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_zeros_in_target_or_attention_stay_finite_and_match_the_clamped_formula():
    att, gaze = _dirichlet(5), _dirichlet(6)
    att[0, 0, :3] = 0.0  # attention underflow where gaze has mass
    gaze[1, :, 5:] = 0.0  # gaze concentrated on a few patches
    gaze[1] /= gaze[1].sum(-1, keepdims=True)
    att[2, 1] = 0.0
    att[2, 1, 7] = 1.0  # one-hot attention
    valid = np.ones((B, T), dtype=bool)
    for direction in ("gaze_to_attention", "attention_to_gaze"):
        for eps in (1e-8, 1e-6):
            got = gaze_kl(torch.tensor(att), torch.tensor(gaze), torch.tensor(valid), direction=direction, eps=eps)
            assert torch.isfinite(got)
            assert got.item() == pytest.approx(_reference(att, gaze, valid, direction, "sum", eps), rel=1e-4)


def test_identical_distributions_give_zero():
    att = torch.tensor(_dirichlet(7), dtype=torch.float32)
    assert gaze_kl(att, att.clone(), torch.ones(B, T, dtype=torch.bool)).item() == pytest.approx(0, abs=1e-6)


def test_no_valid_frame_gives_a_differentiable_zero():
    logits = torch.randn(B, T, P, requires_grad=True)
    target = torch.full((B, T, P), float("nan"))
    loss = gaze_kl(logits.softmax(-1), target, torch.zeros(B, T, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradient_flows_into_attention_as_softmax_minus_gaze():
    """d KL(g || softmax(z)) / dz = softmax(z) - g for each valid frame, divided by the valid count."""
    logits = torch.randn(B, T, P, dtype=torch.float32, requires_grad=True)
    gaze = torch.tensor(_dirichlet(8, alpha=2.0), dtype=torch.float32)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, :2] = False
    gaze_kl(logits.softmax(-1), gaze, valid).backward()
    expected = (logits.softmax(-1) - gaze).detach() / valid.sum()
    expected[~valid] = 0
    torch.testing.assert_close(logits.grad, expected, rtol=1e-4, atol=1e-6)


def test_half_precision_attention_is_computed_in_float32():
    att = torch.tensor(_dirichlet(9), dtype=torch.bfloat16)
    gaze = torch.tensor(_dirichlet(10), dtype=torch.float32)
    out = gaze_kl(att, gaze, torch.ones(B, T, dtype=torch.bool))
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"direction": "both"}, "kl_direction"),
        ({"reduction": "batchmean"}, "kl_reduction"),
        ({"target": torch.ones(B, T, 3, 3)}, "does not match attention"),
        ({"valid": torch.ones(B, T)}, "bool mask"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {
        "attention": torch.full((B, T, P), 1 / P),
        "target": torch.full((B, T, P), 1 / P),
        "valid": torch.ones(B, T, dtype=torch.bool),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gaze_kl(**args)


def test_check_target_rejects_bad_valid_rows_only():
    valid = torch.tensor([[True, False]])
    good = torch.tensor([[[0.5, 0.5], [float("nan"), -1.0]]])
    check_target(good, valid)
    for bad, match in (
        (torch.tensor([[[float("inf"), 0.5], [0.0, 0.0]]]), "non-finite"),
        (torch.tensor([[[-0.5, 1.5], [0.0, 0.0]]]), "negative"),
        (torch.tensor([[[0.0, 0.0], [0.5, 0.5]]]), "no gaze mass"),
    ):
        with pytest.raises(ValueError, match=match):
            check_target(bad, valid)


def test_total_loss():
    ce, kl = torch.tensor(2.0), torch.tensor(0.5, requires_grad=True)
    assert total_loss(ce, kl, 100.0).item() == pytest.approx(52.0)
    assert total_loss(ce, None, 100.0) is ce
    assert total_loss(ce, kl, 0.0) is ce  # lambda 0: KL logged, not trained


def test_a_window_without_valid_gaze_is_out_of_the_denominator():
    """Issue 15, item 8: a window with no valid frame adds nothing to the KL, neither to its sum nor
    to the number of frames it is averaged over, and gets no gradient from it."""
    torch.manual_seed(0)
    att = torch.softmax(torch.randn(3, 4, 9), -1).requires_grad_(True)
    target = torch.softmax(torch.randn(3, 4, 9), -1)
    valid = torch.tensor([[True, True, False, True], [False] * 4, [True, False, True, True]])
    target[1] = float("nan")  # whatever an invalid window carries
    kl = gaze_kl(att, target, valid)
    keep = [0, 2]
    ref = gaze_kl(att[keep].detach(), target[keep], valid[keep])
    torch.testing.assert_close(kl.detach(), ref)
    # independent formula: mean over the 6 valid frames of sum p log(p/q)
    p, q = target[keep][valid[keep]], att.detach()[keep][valid[keep]]
    torch.testing.assert_close(kl.detach(), (p * (p / q).log()).sum(-1).mean(), rtol=1e-4, atol=1e-6)
    kl.backward()
    assert not att.grad[1].any() and att.grad[0].any()

"""The gaze loss: KL between the patch gaze distribution and the gaze block's attention.

L = CE + lambda * mean over frames with valid gaze of KL, computed in float32. Both distributions are
clamped at eps and renormalised before the logarithm, so zeros in either never give inf/NaN; frames
without valid gaze are masked (their target rows may hold anything, even NaN), never faked.
"""

from __future__ import annotations

import torch

DIRECTIONS = ("gaze_to_attention", "attention_to_gaze")
REDUCTIONS = ("sum", "mean")


def gaze_kl(
    attention: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    direction: str = "gaze_to_attention",
    reduction: str = "sum",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Scalar KL averaged over valid frames.

    attention (B, T, P): the block's distribution over patches per frame.
    target (B, T, P) or (B, T, gh, gw): the gaze distribution over the same patches (row-major grid).
    valid (B, T) bool: frames whose gaze is usable.
    direction "gaze_to_attention" = KL(gaze || attention) (default), "attention_to_gaze" = KL(attention || gaze).
    reduction over patches per frame: "sum" (the KL itself) or "mean" (KL / P).
    With no valid frame the result is 0, still connected to `attention` so backward() works.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"kl_direction: {direction!r} is not one of {DIRECTIONS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"kl_reduction: {reduction!r} is not one of {REDUCTIONS}")
    if attention.ndim != 3:
        raise ValueError(f"attention must be (B, T, P), got {tuple(attention.shape)}")
    b, t, p = attention.shape
    if target.ndim == 4:
        target = target.flatten(2)
    if tuple(target.shape) != (b, t, p):
        raise ValueError(
            f"gaze target {tuple(target.shape)} does not match attention {tuple(attention.shape)} "
            f"(is the heatmap stage's patch grid the model preset's?)"
        )
    if tuple(valid.shape) != (b, t) or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a (B, T) = {(b, t)} bool mask, got {tuple(valid.shape)} {valid.dtype}")

    mask = valid.unsqueeze(-1)
    # invalid rows are replaced before anything touches them: their content must not reach the loss
    gaze = torch.where(mask, target.float(), torch.ones((), device=target.device))
    att = attention.float()
    gaze = _normalise(gaze.clamp_min(eps))
    att = _normalise(att.clamp_min(eps))
    p_, q_ = (gaze, att) if direction == "gaze_to_attention" else (att, gaze)
    kl = (p_ * (p_.log() - q_.log())).sum(dim=-1)  # (B, T)
    if reduction == "mean":
        kl = kl / p
    kl = torch.where(valid, kl, torch.zeros((), device=kl.device))
    return kl.sum() / valid.sum().clamp_min(1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True)


def check_target(target: torch.Tensor, valid: torch.Tensor, where: str = "gaze target") -> None:
    """Raise if a valid frame's target is not a finite, non-negative distribution with mass (data check)."""
    rows = target.float().flatten(2)[valid]
    if rows.numel() == 0:
        return
    if not torch.isfinite(rows).all():
        raise ValueError(f"{where}: non-finite values in frames marked valid")
    if (rows < 0).any():
        raise ValueError(f"{where}: negative values in frames marked valid")
    if (rows.sum(dim=-1) <= 0).any():
        raise ValueError(f"{where}: a frame marked valid has no gaze mass")


def total_loss(ce: torch.Tensor, kl: torch.Tensor | None, lam: float) -> torch.Tensor:
    """L = CE + lambda * KL; kl None (a run without the block) gives CE. lambda 0 keeps KL out of the
    gradient exactly (the lambda0 run still logs KL)."""
    if kl is None or lam == 0:
        return ce
    return ce + lam * kl

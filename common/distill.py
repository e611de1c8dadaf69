"""EMA distillation (HIRI-ViT §4.5, Eq. 4-5): the EMA teacher's per-position class probabilities on the two
original images, mixed by the same CutMix mask, become a soft target blended with the CutMix label.

    x~ = M * x_a + (1 - M) * x_b,           y~ = lam * y_a + (1 - lam) * y_b,   lam = sum(M) / HW   (Eq. 4)
    P~ = M * P_a + (1 - M) * P_b,           y^ = AvgPool(P~)                                        (Eq. 5)
    y_bar = alpha * y~ + (1 - alpha) * y^,  loss = CE(student(x~), y_bar)

P_a, P_b are softmax maps (B, classes, h, w) of the teacher with its average pooling removed, i.e.
``teacher.forward_dense(x)`` (papers/hiri_vit.py provides it). Because x_b is a permutation of the batch
(x_b = x[perm]), one teacher pass gives both: P_b = P_a[perm].

Used by ``common.train.fit`` when ``TrainConfig.ema_distill_alpha > 0``; the teacher is the EMA copy
(``torch.optim.swa_utils.AveragedModel``) that ``fit`` keeps anyway.

Choices the paper leaves open (documented here and in papers/hiri_vit.py):
* the CutMix box follows Yun et al. (area 1 - lam with lam ~ Beta(a, a), centre uniform, clipped), and lam is
  recomputed from the clipped box, as Eq. 4 defines it (sum(M) / HW);
* M is brought to the teacher's grid (h, w) by area averaging, so a mask cell that a box edge cuts gets the
  fraction of its pixels that come from x_a (exact when the box is aligned with the grid);
* label smoothing (``TrainConfig.label_smoothing``) is applied to the one-hot labels inside y~ only; the
  teacher's part is already soft;
* the teacher runs in eval mode (BN running statistics, no drop-path) without gradients;
* with probability 1 - mix_prob a batch is not mixed (M = 1), and the target is still alpha-blended;
* MixUp (``TrainConfig.mixup > 0``; not in the paper, whose Eq. 4 is CutMix) is the same equation with a
  constant mask M = lam everywhere: x~ = lam x_a + (1 - lam) x_b, P~ = lam P_a + (1 - lam) P_b. With both
  MixUp and CutMix on, each batch picks one with probability 1/2 (as torchvision's RandomChoice and timm
  do); with neither, ``fit`` uses the paper's CutMix with alpha 1.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def cutmix_mask(h: int, w: int, lam: float, generator: Optional[torch.Generator] = None,
                device=None) -> torch.Tensor:
    """A (h, w) {0, 1} mask M: 1 where x_a is kept, 0 inside a random box of area ~(1 - lam) * h * w."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    bh, bw = int(round(h * cut)), int(round(w * cut))
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    mask = torch.ones(h, w, device=device)
    mask[y0:y1, x0:x1] = 0.0
    return mask


def mask_to_grid(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Area-average a (H, W) mask to the teacher's (h, w) grid: the fraction of each cell that is x_a."""
    return F.adaptive_avg_pool2d(mask[None, None], grid)[0, 0]  # (h, w)


def distill_target(p_a: torch.Tensor, p_b: torch.Tensor, mask: torch.Tensor, y_a: torch.Tensor,
                   y_b: torch.Tensor, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """y_bar of Eq. 5 for one mixed batch.

    Args:
        p_a, p_b: teacher probability maps (B, K, h, w) of the two original images.
        mask: the CutMix mask M at image resolution (H, W) (1 = pixel from x_a).
        y_a, y_b: labels, (B,) class indices or (B, K) distributions.
        alpha: weight of the CutMix label y~ (1 - alpha goes to the teacher's y^).
    Returns (B, K) rows that sum to 1.
    """
    k = p_a.shape[1]
    lam = mask.mean()                                                        # lam = sum(M) / HW  (Eq. 4)
    onehot = lambda y: (F.one_hot(y, k).float() if y.ndim == 1 else y.float())  # noqa: E731
    y_a, y_b = onehot(y_a), onehot(y_b)                                      # (B, K)
    if label_smoothing:
        y_a = y_a * (1 - label_smoothing) + label_smoothing / k
        y_b = y_b * (1 - label_smoothing) + label_smoothing / k
    y_tilde = lam * y_a + (1 - lam) * y_b                                    # (B, K)       Eq. 4
    m = mask_to_grid(mask.to(p_a.dtype), p_a.shape[-2:])                     # (h, w)
    p_tilde = m * p_a + (1 - m) * p_b                                        # (B, K, h, w) Eq. 5
    y_hat = p_tilde.mean((2, 3))                                             # (B, K)       AvgPool
    return alpha * y_tilde + (1 - alpha) * y_hat                             # (B, K)       y_bar


class EMADistiller:
    """The training step's loss with EMA distillation (see the module docstring).

    ``loss(model, teacher, x, y, num_classes, label_smoothing) -> (loss, student_logits)``; the teacher must
    have ``forward_dense(x) -> (B, classes, h, w)``. The last target, mask and lam are kept in
    ``self.last`` for inspection and tests. Randomness (lam, box, mix_prob) uses torch's global RNG, which
    ``fit`` seeds.
    """

    def __init__(self, alpha: float = 0.5, cutmix_alpha: float = 1.0, mix_prob: float = 1.0,
                 mixup_alpha: float = 0.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (the CutMix label's weight in y_bar) must be in [0, 1], got {alpha}")
        if cutmix_alpha < 0 or mixup_alpha < 0 or cutmix_alpha == mixup_alpha == 0:
            raise ValueError(f"cutmix_alpha and mixup_alpha (Beta parameters) must be >= 0 and one of them > 0, "
                             f"got cutmix_alpha={cutmix_alpha}, mixup_alpha={mixup_alpha}")
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        self.alpha, self.cutmix_alpha, self.mixup_alpha, self.mix_prob = alpha, cutmix_alpha, mixup_alpha, mix_prob
        self.last: dict = {}

    @staticmethod
    def _sample_lam(a: float) -> float:
        return float(torch.distributions.Beta(a, a).sample())

    def mix(self, x: torch.Tensor):
        """CutMix or MixUp with a batch permutation: returns x~, perm, M (H, W) (MixUp: M = lam everywhere)
        and the kind ("cutmix", "mixup" or "none")."""
        b, _, h, w = x.shape
        perm = torch.roll(torch.arange(b, device=x.device), 1)              # x_b = x[perm]
        kinds = [k for k, a in (("cutmix", self.cutmix_alpha), ("mixup", self.mixup_alpha)) if a > 0]
        if float(torch.rand(())) >= self.mix_prob:
            kind, mask = "none", torch.ones(h, w, device=x.device)
        else:
            kind = kinds[0] if len(kinds) == 1 else kinds[int(torch.randint(2, ()))]
            if kind == "cutmix":
                mask = cutmix_mask(h, w, self._sample_lam(self.cutmix_alpha), device=x.device)
            else:                                                           # MixUp: a constant mask
                mask = torch.full((h, w), self._sample_lam(self.mixup_alpha), device=x.device)
        x_mixed = mask * x + (1 - mask) * x[perm]                           # (B, 3, H, W)  Eq. 4
        return x_mixed, perm, mask, kind

    def loss(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
             num_classes: int, label_smoothing: float = 0.0):
        if not hasattr(teacher, "forward_dense"):
            raise TypeError(f"EMA distillation needs a teacher with forward_dense(x) -> (B, classes, h, w) (the "
                            f"logits map before average pooling); {type(teacher).__name__} has none")
        x_mixed, perm, mask, kind = self.mix(x)
        was_training = teacher.training
        teacher.eval()
        with torch.no_grad():
            p_a = teacher.forward_dense(x).float().softmax(dim=1)           # (B, K, h, w)
        teacher.train(was_training)
        if p_a.shape[1] != num_classes:
            raise ValueError(f"the teacher's map has {p_a.shape[1]} classes, expected {num_classes}")
        target = distill_target(p_a, p_a[perm], mask, y, y[perm], self.alpha, label_smoothing)  # (B, K)
        logits = model(x_mixed)                                              # (B, K)
        loss = torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
        self.last = {"target": target, "mask": mask, "perm": perm, "lam": float(mask.mean()), "p_a": p_a,
                     "kind": kind}
        return loss, logits

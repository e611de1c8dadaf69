"""common/distill.py: the EMA-distillation target is built as HIRI-ViT's Eq. 5 describes, on a tiny model,
and common.train.fit runs with it."""
import math

import pytest
import torch
import torch.nn.functional as F

from common import distill, train as T
from common.data import build_loaders
from papers import hiri_vit as H

TINY = dict(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), ffn_ratios=(2, 2, 2, 2, 2), heads=(0, 0, 0, 2, 2))


def test_target_is_eq5_by_hand():
    # Teacher maps on a 2x2 grid; the CutMix box covers exactly the right column of a 4x4 image.
    k = 3
    p_a = torch.softmax(torch.randn(2, k, 2, 2), 1)
    p_b = torch.softmax(torch.randn(2, k, 2, 2), 1)
    mask = torch.ones(4, 4)
    mask[:, 2:] = 0                                    # right half from x_b -> lam = 0.5
    y_a, y_b = torch.tensor([0, 1]), torch.tensor([2, 0])
    alpha = 0.3
    got = distill.distill_target(p_a, p_b, mask, y_a, y_b, alpha)
    # By hand: left column of the grid from P_a, right column from P_b, then the spatial mean.
    y_hat = (p_a[..., :, 0].sum(-1) + p_b[..., :, 1].sum(-1)) / 4
    y_tilde = 0.5 * F.one_hot(y_a, k) + 0.5 * F.one_hot(y_b, k)
    torch.testing.assert_close(got, alpha * y_tilde + (1 - alpha) * y_hat)
    torch.testing.assert_close(got.sum(1), torch.ones(2))


def test_distiller_uses_the_ema_teacher_maps_and_the_same_mask():
    torch.manual_seed(0)
    student = H.hiri_vit_s(num_classes=4, img_size=64, **TINY)
    teacher = H.hiri_vit_s(num_classes=4, img_size=64, **TINY)     # different weights, like an EMA copy
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    student.eval()                                                 # deterministic BN, to re-check logits below
    d = distill.EMADistiller(alpha=0.5, cutmix_alpha=1.0)
    loss, logits = d.loss(student, teacher, x, y, num_classes=4, label_smoothing=0.1)
    assert logits.shape == (4, 4) and loss.ndim == 0 and torch.isfinite(loss)
    last = d.last
    mask, perm = last["mask"], last["perm"]
    assert 0.0 <= last["lam"] <= 1.0 and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(perm, torch.tensor([3, 0, 1, 2]))
    # Rebuild the target from scratch: the teacher (eval mode) on the two ORIGINAL images, mixed by M.
    teacher.eval()
    with torch.no_grad():
        p_a = teacher.forward_dense(x).softmax(1)                  # (B, K, 1, 1) at 64 px
        p_b = teacher.forward_dense(x[perm]).softmax(1)
    m = F.adaptive_avg_pool2d(mask[None, None], p_a.shape[-2:])[0, 0]
    y_hat = (m * p_a + (1 - m) * p_b).mean((2, 3))
    lam = mask.mean()
    smooth = lambda t: F.one_hot(t, 4) * 0.9 + 0.1 / 4  # noqa: E731
    y_tilde = lam * smooth(y) + (1 - lam) * smooth(y[perm])
    torch.testing.assert_close(last["target"], 0.5 * y_tilde + 0.5 * y_hat, rtol=1e-5, atol=1e-6)
    # The student saw the mixed image x~ = M x_a + (1 - M) x_b.
    with torch.no_grad():
        torch.testing.assert_close(student(mask * x + (1 - mask) * x[perm]), logits.detach(), rtol=1e-4, atol=1e-4)


def test_alpha_one_is_plain_cutmix_and_gradients_flow():
    torch.manual_seed(1)
    student = H.hiri_vit_s(num_classes=4, img_size=64, **TINY)
    teacher = H.hiri_vit_s(num_classes=4, img_size=64, **TINY)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    d = distill.EMADistiller(alpha=1.0)
    loss, _ = d.loss(student, teacher, x, y, 4)
    lam = d.last["lam"]
    perm = d.last["perm"]
    torch.testing.assert_close(d.last["target"], lam * F.one_hot(y, 4).float() + (1 - lam) * F.one_hot(y[perm], 4).float())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())       # the teacher is never trained by backprop
    assert any(p.grad is not None for p in student.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        distill.EMADistiller(alpha=1.5)
    with pytest.raises(ValueError, match="one of them > 0"):
        distill.EMADistiller(cutmix_alpha=0.0, mixup_alpha=0.0)
    with pytest.raises(ValueError, match="mix_prob"):
        distill.EMADistiller(mix_prob=1.5)
    d = distill.EMADistiller()
    with pytest.raises(TypeError, match="forward_dense"):
        d.loss(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), 3)


class DenseNet(torch.nn.Module):
    """A tiny model with a 4x4 teacher grid: forward_dense (B, K, 4, 4), forward = its spatial mean."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes = num_classes
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.cls = torch.nn.Conv2d(8, num_classes, 1)

    def forward_dense(self, x):
        return self.cls(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4))     # (B, K, 4, 4)

    def forward(self, x):
        return self.forward_dense(x).mean((2, 3))                           # (B, K)


def test_mixup_mixes_the_teacher_maps():
    """MixUp in Eq. 5: a constant mask M = lam, so P~ = lam P_a + (1 - lam) P_b on every cell of a 4x4 grid."""
    torch.manual_seed(0)
    teacher, student = DenseNet(), DenseNet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    d = distill.EMADistiller(alpha=0.25, cutmix_alpha=0.0, mixup_alpha=1.0, mix_prob=1.0)
    _, logits = d.loss(student, teacher, x, y, 4)
    lam, perm = d.last["lam"], d.last["perm"]
    assert d.last["kind"] == "mixup" and d.last["p_a"].shape[-2:] == (4, 4) and 0 < lam < 1
    with torch.no_grad():
        p = teacher.forward_dense(x).softmax(1)
        y_hat = (lam * p + (1 - lam) * p[perm]).mean((2, 3))
        torch.testing.assert_close(student(lam * x + (1 - lam) * x[perm]), logits.detach())
    y_tilde = lam * F.one_hot(y, 4) + (1 - lam) * F.one_hot(y[perm], 4)
    torch.testing.assert_close(d.last["target"], 0.25 * y_tilde + 0.75 * y_hat)


@pytest.mark.parametrize("mixup,cutmix,mix_prob,kinds", [
    (0.8, 0.0, 0.5, {"mixup", "none"}),
    (0.8, 1.0, 1.0, {"mixup", "cutmix"}),
    (0.0, 0.0, 1.0, {"cutmix"}),                     # neither given: the paper's CutMix (Eq. 4)
])
def test_fit_distills_with_the_configured_mixing(monkeypatch, mixup, cutmix, mix_prob, kinds):
    """End to end through fit(), teacher grid 4x4: every step's target is Eq. 5 recomputed from the EMA
    teacher's maps and the step's mask, and the mixing is what TrainConfig asked for (mixup honoured,
    mix_prob honoured)."""
    seen, real_loss = [], distill.EMADistiller.loss

    def checked_loss(self, model, teacher, x, y, num_classes, label_smoothing=0.0):
        out = real_loss(self, model, teacher, x, y, num_classes, label_smoothing)
        last = self.last
        teacher.eval()
        with torch.no_grad():
            p = teacher.forward_dense(x).softmax(1)                          # (B, K, 4, 4)
        m = F.adaptive_avg_pool2d(last["mask"][None, None], (4, 4))[0, 0]
        perm, lam = last["perm"], last["mask"].mean()
        smooth = lambda t: F.one_hot(t, num_classes) * (1 - label_smoothing) + label_smoothing / num_classes  # noqa
        target = 0.5 * (lam * smooth(y) + (1 - lam) * smooth(y[perm])) + 0.5 * (m * p + (1 - m) * p[perm]).mean((2, 3))
        torch.testing.assert_close(last["target"], target, rtol=1e-5, atol=1e-6)
        seen.append(last["kind"])
        return out

    monkeypatch.setattr(distill.EMADistiller, "loss", checked_loss)
    tl, vl, nc = build_loaders("pathfinder-colors", img_size=32, batch_size=8, train_size=96, val_size=8)
    torch.manual_seed(0)
    h = T.fit(DenseNet(nc), tl, vl, T.TrainConfig(epochs=1, ema=0.9, ema_distill_alpha=0.5, mixup=mixup,
                                                  cutmix=cutmix, mix_prob=mix_prob, progress=False, log=False))
    assert len(seen) == 12 and set(seen) == kinds, seen
    assert h["val_acc_ema"]


def test_fit_runs_with_ema_distillation_on_hiri_vit():
    """HIRI-ViT at 128 px: its forward_dense map is 2x2, so the mask really is mixed per cell."""
    tl, vl, nc = build_loaders("pathfinder-colors", img_size=128, batch_size=4, train_size=8, val_size=4)
    torch.manual_seed(0)
    model = H.hiri_vit_s(num_classes=nc, img_size=128, **TINY)
    assert model.forward_dense(torch.randn(1, 3, 128, 128)).shape == (1, nc, 2, 2)
    h = T.fit(model, tl, vl, T.TrainConfig(epochs=1, ema=0.9, ema_distill_alpha=0.5, cutmix=1.0, mixup=0.8,
                                           progress=False, log=False, max_steps_per_epoch=2))
    assert len(h["train_loss"]) == 1 and h["val_acc_ema"] and math.isfinite(h["train_loss"][0])

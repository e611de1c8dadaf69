"""common/train.py and common/flops.py: a short run reduces the loss, resume continues exactly, the CLI,
and the MAC counter's conventions."""
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import train as T
from common.data import build_loaders
from common.flops import count_macs, count_params


class TinyNet(nn.Module):
    """A small conv net: enough to learn something on the embedded data in seconds."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def _loaders(n=256):
    return build_loaders("pathfinder-colors", img_size=32, batch_size=32, train_size=n, val_size=64)


def test_short_run_reduces_loss():
    tl, vl, nc = _loaders()
    h = T.fit(TinyNet(nc), tl, vl, T.TrainConfig(epochs=4, lr=3e-3, warmup_epochs=0.5, progress=False, log=False))
    assert h["epoch"] == [1, 2, 3, 4]
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert set(h) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"}
    assert h["lr"][-1] < 1e-4                     # the cosine reached (near) its floor


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """3 epochs in one go == 2 epochs, crash, resume for the 3rd (weights, optimizer, schedule, EMA, shuffles,
    MixUp/CutMix randomness)."""
    cfg = dict(lr=3e-3, warmup_epochs=1, progress=False, log=False, mixup=0.2, cutmix=0.2, ema=0.9)
    tl, vl, nc = _loaders(128)
    torch.manual_seed(0)
    m_full = TinyNet(nc)
    init = {k: v.clone() for k, v in m_full.state_dict().items()}
    h_full = T.fit(m_full, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "a"), **cfg))

    class Crash(Exception):
        pass

    real_save, saves = T._save_atomic, []

    def save_then_crash_after_epoch_2(obj, path):
        real_save(obj, path)
        saves.append(path)
        if path.endswith("last.pt") and sum(p.endswith("last.pt") for p in saves) == 2:
            raise Crash()

    tl, vl, nc = _loaders(128)
    m = TinyNet(nc)
    m.load_state_dict(init)
    monkeypatch.setattr(T, "_save_atomic", save_then_crash_after_epoch_2)
    with pytest.raises(Crash):
        T.fit(m, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "b"), **cfg))
    monkeypatch.setattr(T, "_save_atomic", real_save)

    tl, vl, nc = _loaders(128)                     # a fresh process rebuilds everything
    m2 = TinyNet(nc)
    h_res = T.fit(m2, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "b"), resume=True, **cfg))
    assert h_res["epoch"] == [1, 2, 3]
    for k, v in m_full.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert h_res["val_acc"] == h_full["val_acc"]
    saved = json.load(open(tmp_path / "b" / "history.json"))
    assert saved["epoch"] == [1, 2, 3] and os.path.exists(tmp_path / "b" / "best.pt")


def test_warmup_cosine_shape():
    lrs = [T.warmup_cosine(s, 100, 10, 1e-3, 1e-6) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'.*Valid names"):
        T.build_model("no_such_model")


def test_cli_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="Valid names: pathfinder"):
        T.main(["--data", "imagenet-22k", "--smoke", "--no-progress"])


def test_flops_conventions():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)        # 8*3*9 MACs per pixel
            self.proj = nn.Linear(8, 8)
            self.kernel = nn.Parameter(torch.zeros(1, 1, 3, 3))

        def forward(self, x):
            x = self.conv(x)                                   # (B, 8, 4, 4)
            b, c, h, w = x.shape
            x = F.conv2d(x.reshape(b * c, 1, h, w), self.kernel, padding=1).reshape(b, c, h, w)  # functional
            t = self.proj(x.flatten(2).transpose(1, 2))        # (B, 16, 8)
            return (t @ t.transpose(1, 2)).mean((1, 2))        # a bare matmul: (B, 16, 16)

    r = count_macs(M(), img_size=4)
    conv = 16 * 8 * 27
    lin = 16 * 8 * 8
    functional = 8 * 16 * 9
    attn = 16 * 16 * 8
    assert r["layers"] == conv + lin
    assert r["total"] == conv + lin + functional + attn
    assert count_params(M()) == 8 * 27 + 8 + 64 + 8 + 9

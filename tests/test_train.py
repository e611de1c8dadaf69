"""common/train.py and common/flops.py: a short run reduces the loss, resume continues exactly and refuses
another job, the LR history and schedule, the EMA warm-up, the weight-decay groups of every paper, the CLI
(generated from TrainConfig; mistakes exit 2 with one message; the same seed gives the same weights), and the
MAC counter's conventions. Multi-process runs: tests/test_ddp.py."""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import train as T
from common.data import build_loaders
from common.flops import count_macs, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    """3 epochs in one go == 2 epochs, crash, resume for the 3rd: weights, EMA, optimizer state and history
    bit-identical (shuffles, MixUp/CutMix randomness reseeded per epoch). tests/test_ddp.py does the same with a
    real SIGKILL, 2 processes and data workers."""
    cfg = dict(lr=3e-3, warmup_epochs=1, progress=False, log=False, mixup=0.2, cutmix=0.2, ema=0.9)
    tl, vl, nc = _loaders(128)
    torch.manual_seed(0)
    m_full = TinyNet(nc)
    init = {k: v.clone() for k, v in m_full.state_dict().items()}
    h_full = T.fit(m_full, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "a"), **cfg))

    class Crash(Exception):
        pass

    real_save, saves = T.save_checkpoint, []

    def save_then_crash_after_epoch_2(*a, **kw):
        real_save(*a, **kw)
        saves.append(1)
        if len(saves) == 2:
            raise Crash()

    tl, vl, nc = _loaders(128)
    m = TinyNet(nc)
    m.load_state_dict(init)
    monkeypatch.setattr(T, "save_checkpoint", save_then_crash_after_epoch_2)
    with pytest.raises(Crash):
        T.fit(m, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "b"), **cfg))
    monkeypatch.setattr(T, "save_checkpoint", real_save)

    tl, vl, nc = _loaders(128)                     # a fresh process rebuilds everything
    m2 = TinyNet(nc)
    h_res = T.fit(m2, tl, vl, T.TrainConfig(epochs=3, out_dir=str(tmp_path / "b"), resume=True, **cfg))
    assert h_res["epoch"] == [1, 2, 3]
    for k, v in m_full.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k
    for k, v in h_full.ema.state_dict().items():
        assert torch.equal(h_res.ema.state_dict()[k], v), ("ema", k)
    a, b = (T.load_checkpoint(str(tmp_path / d / "last.pt"))["optimizer"] for d in ("a", "b"))
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k]), ("optimizer", i, k)
    timing = {"time", "img_per_s"}
    assert {k: v for k, v in h_res.items() if k not in timing} == {k: v for k, v in h_full.items() if k not in timing}
    saved = json.load(open(tmp_path / "b" / "history.json"))
    assert saved["epoch"] == [1, 2, 3]
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=False)
    assert best["ema"] is not None and best["ema"].keys() == h_full.ema.state_dict().keys()


def test_resume_refuses_another_job_before_touching_anything(tmp_path):
    tl, vl, nc = _loaders(64)
    base = dict(lr=3e-3, progress=False, log=False, out_dir=str(tmp_path))
    T.fit(TinyNet(nc), tl, vl, T.TrainConfig(epochs=2, **base))
    ck = tmp_path / "last.pt"
    before = (ck.read_bytes(), (tmp_path / "history.json").read_bytes())
    cases = [(TinyNet(nc), dict(epochs=3), "epochs = 2.*epochs = 3"),
             (TinyNet(nc), dict(epochs=2, ema=0.99), "ema = None.*ema = 0.99"),
             (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, nc)), dict(epochs=2), "model = 'TinyNet'.*'Sequential'")]
    for model, kw, pattern in cases:
        m0 = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(T.ResumeError, match=pattern):
            T.fit(model, tl, vl, T.TrainConfig(resume=True, **kw, **base))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in m0.items())   # the model untouched
    assert (ck.read_bytes(), (tmp_path / "history.json").read_bytes()) == before   # and the files
    # From the CLI: the message alone, exit status 2.
    with pytest.raises(SystemExit) as e:
        T.main(["lkca_t", "--epochs", "1", "--train-size", "32", "--val-size", "16", "--no-progress",
                "--out", str(tmp_path), "--resume"])
    assert e.value.code == 2


def test_lr_history_is_the_steps_lr_and_one_epoch_decays():
    tl, vl, nc = _loaders(128)                    # 4 steps of 32 per epoch
    peak, floor = 1e-3, 1e-6
    h = T.fit(TinyNet(nc), tl, vl, T.TrainConfig(epochs=2, lr=peak, min_lr=floor, warmup_epochs=0.5,
                                                 progress=False, log=False))
    # warm-up: 2 steps; cosine over steps 2..7 reaching the floor at step 7. Epoch 1's last step is step 3.
    assert h["lr"][0] == pytest.approx(peak * T.warmup_cosine(3, 8, 2, peak, floor))
    assert h["lr"][0] == pytest.approx(floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * 1 / 5)))
    assert h["lr"][1] == pytest.approx(floor)
    # One epoch with TrainConfig's default warm-up (1 epoch): capped at half the run, so the LR still decays.
    h1 = T.fit(TinyNet(nc), tl, vl, T.TrainConfig(epochs=1, lr=peak, min_lr=floor, progress=False, log=False))
    assert h1["lr"] == [pytest.approx(floor)]


def test_warmup_cosine_shape():
    lrs = [T.warmup_cosine(s, 100, 10, 1e-3, 1e-6) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-6 / 1e-3)


def test_ema_decay_warms_up():
    """EMA after n updates: d_n = min(decay, (1 + n) / (10 + n)), restated by hand; without the warm-up the
    average would still be mostly the initial weights."""
    from torch.optim.swa_utils import AveragedModel

    model = nn.Linear(1, 1, bias=False)
    ema = AveragedModel(model, multi_avg_fn=T.ema_avg_fn(0.999, warmup=True), use_buffers=True)
    ref = None
    for step in range(50):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update_parameters(model)
        if ref is None:
            ref = float(step)                      # the first update copies
        else:
            d = min(0.999, (1 + step) / (10 + step))   # n = step updates so far
            ref = d * ref + (1 - d) * float(step)
    assert ema.module.weight.item() == pytest.approx(ref, rel=1e-5)
    assert ref > 30                                # vs ~1.2 with a constant 0.999


PAPER_MODELS = [("lkca", "lkca_t", {}), ("lkca", "vit_1m", {}), ("iianet", "iianet", dict(img_size=64)),
                ("hiri_vit", "hiri_vit_s", dict(img_size=224)), ("token_fusion", "token_fusion_late", {})]


@pytest.mark.parametrize("module,name,kw", PAPER_MODELS)
def test_param_groups_per_paper_model(module, name, kw):
    """Our groups == timm's param_groups_weight_decay (the independent oracle) with the model's
    no_weight_decay() list; every 1-D tensor is exempt, every 2-D+ weight not listed decays (heads of any
    size), and tables of one kind land in one group."""
    import importlib

    from timm.optim import param_groups_weight_decay

    factory = importlib.import_module(f"papers.{module}").MODELS[name]
    with torch.device("meta"):
        model = factory(num_classes=10, **kw)
    listed = T.no_weight_decay_names(model)
    ours = T.param_groups(model, 0.05)
    oracle = param_groups_weight_decay(model, 0.05, no_weight_decay_list=listed)
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert {g["weight_decay"]: ids(g) for g in ours} == {g["weight_decay"]: ids(g) for g in oracle}
    names = dict(zip(("decay", "no_decay"), (set(g["param_names"]) for g in ours)))
    for n, p in model.named_parameters():
        assert (n in names["no_decay"]) == (p.ndim <= 1 or n in listed), n
    heads = [n for n, p in model.named_parameters() if p.ndim == 2 and n.split(".")[-2] in ("head", "fc")]
    assert heads and all(h in names["decay"] for h in heads)
    if module == "iianet":                          # the 24 position tables: all in one group
        tables = [n for n, _ in model.named_parameters() if n.endswith(("rel_h", "rel_w"))]
        assert len(tables) == 24 and len({n in names["decay"] for n in tables}) == 1


def test_no_weight_decay_is_honoured_on_submodules():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(4, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self):
            return {"table"}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 4))
            self.block = Block()
            self.head = nn.Linear(4, 2)

        def no_weight_decay(self):
            return {"pos_embed"}

    decay, no_decay = (set(g["param_names"]) for g in T.param_groups(Net(), 0.1))
    assert decay == {"block.proj.weight", "head.weight"}
    assert no_decay == {"pos_embed", "block.table", "block.proj.bias", "head.bias"}


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'.*Valid names"):
        T.build_model("no_such_model")


@pytest.mark.parametrize("argv,message", [
    (["--data", "imagenet-22k"], "unknown dataset 'imagenet-22k'"),
    (["no_such_model"], "unknown model 'no_such_model'"),
    (["--mix-prob", "2"], "mix_prob .* must be in \\[0, 1\\], got 2.0"),
    (["--epochs", "0"], "epochs .* must be an integer >= 1"),
    (["--data", "cifar10", "--root", "/nonexistent"], "dataset 'cifar10' not found"),
])
def test_cli_mistakes_print_one_message_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        T.main(argv + ["--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err and len(err.splitlines()) <= 6, err


def test_cli_error_from_a_shell_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "common.train", "--data", "cifar10", "--root", "/nonexistent"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not found" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) <= 6


def test_cli_covers_trainconfig():
    flags = {a.dest for a in T.build_parser()._actions}
    missing = {f.name for f in dataclasses.fields(T.TrainConfig)} - flags - {"extra"}
    assert not missing
    assert T.TrainConfig().mix_prob == 0.5             # the LKCA authors' main.py (timm: 1.0, via --mix-prob 1)
    assert T.build_parser().parse_args(["--mix-prob", "1"]).mix_prob == 1.0


def test_cli_end_to_end_same_seed_same_weights(tmp_path, capsys):
    """The same command twice gives bit-identical weights (the model is built after seeding); --out holds the
    checkpoints and history; a different seed differs."""
    argv = ["lkca_t", "--epochs", "2", "--train-size", "64", "--val-size", "32", "--batch-size", "16",
            "--max-steps-per-epoch", "2", "--no-progress", "--mixup", "0.8", "--ema", "0.9"]
    for d in ("a", "b"):
        T.main(argv + ["--out", str(tmp_path / d)])
    T.main(argv + ["--out", str(tmp_path / "c"), "--seed", "1"])
    out = capsys.readouterr().out
    assert out.count("final validation accuracy") == 3 and "img/s" in out
    a, b, c = (T.load_checkpoint(str(tmp_path / d / "last.pt")) for d in "abc")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
    # The initialisation itself depends on the seed (the old bug: the model was built before seeding).
    assert a["meta"]["model"] == "lkca_t" and a["config"]["seed"] == 0
    h = json.load(open(tmp_path / "a" / "history.json"))
    assert h["epoch"] == [1, 2] and len(h["img_per_s"]) == 2 and os.path.exists(tmp_path / "a" / "best.pt")


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

"""common.train under torchrun (gloo on CPU, localhost): 2 processes == 1 process with the same global batch ==
gradient accumulation; exact distributed evaluation; rank 0 alone prints and writes; SIGKILL after epoch 2 +
--resume == the unbroken run, bit for bit (weights, EMA, optimizer state, history), with 1 and 2 processes and
0 and 2 data workers.

This file is also the worker script the tests launch: ``torchrun ... tests/test_ddp.py MODE ARGS``."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common import train as T  # noqa: E402
from common.data import build_loaders  # noqa: E402

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import skip_cifar_md5, write_cifar  # noqa: E402  (tests/fixtures.py)


class TinyNet(nn.Module):
    """No BatchNorm, no dropout: the only difference between the layouts is the order of the reductions."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


EQUIV = dict(train_size=128, val_size=37)        # 37: not divisible by 2 processes


def _equiv_run(batch_size, accum, out_dir=None):
    tl, vl, nc = build_loaders("pathfinder-colors", img_size=32, batch_size=batch_size, num_workers=0, **EQUIV)
    torch.manual_seed(0)
    model = TinyNet(nc)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    h = T.fit(model, tl, vl, T.TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, accum_steps=accum, ema=0.9,
                                           progress=False, log=True, out_dir=out_dir))
    fixed = TinyNet(nc)
    fixed.load_state_dict(init)
    return model, h, T.evaluate(fixed, vl, torch.device("cpu"))


def _torchrun(nproc, *args, env=None, timeout=240):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])           # one process: no launcher needed (saves ~2 s)
    cmd = [*launcher, os.path.abspath(__file__), *args]
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------
# 2 processes == 1 process == accumulation; exact evaluation; rank 0 alone prints and writes
# ---------------------------------------------------------------------------------------------------------
def test_two_processes_equal_one_process_and_accumulation(tmp_path):
    r = _torchrun(2, "equiv", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    one, h_one, ev_one = _equiv_run(64, 1)
    acc, h_acc, _ = _equiv_run(32, 2)
    diffs = {}
    for name, other in (("2x32", ddp["model"]), ("1x32xaccum2", acc.state_dict())):
        diffs[name] = max((other[k] - v).abs().max().item() for k, v in one.state_dict().items())
        for k, v in one.state_dict().items():
            torch.testing.assert_close(other[k], v, rtol=1e-5, atol=1e-6)
    print("max |weight diff| vs 1x64 after 2 epochs (4 AdamW steps):", diffs)
    for k in ("train_loss", "train_acc", "val_acc"):
        torch.testing.assert_close(torch.tensor(ddp["history"][k]), torch.tensor(h_one[k]), rtol=1e-5, atol=1e-6)
    # The EMA runs on every process identically.
    for k, v in h_one.ema.state_dict().items():
        torch.testing.assert_close(ddp["ema"][k], v, rtol=1e-5, atol=1e-6)
    # Exact distributed evaluation: 37 samples, 19 + 18 over the two processes, none duplicated or dropped.
    assert ddp["eval_n"] == [37, 37] and ev_one["n"] == 37
    assert ddp["eval"]["acc"] == ev_one["acc"]
    assert ddp["eval"]["loss"] == pytest.approx(ev_one["loss"], rel=1e-6)
    assert ddp["eval_unsharded"]["n"] == 37 and ddp["eval_unsharded"]["acc"] == ev_one["acc"]
    # Rank 0 alone prints and writes (each rank was given its own out_dir to make a stray write visible).
    assert r.stdout.count("epoch   1/2") == 1 and r.stdout.count("epoch   2/2") == 1, r.stdout
    assert sorted(os.listdir(tmp_path / "runs")) == ["rank0"]
    assert sorted(os.listdir(tmp_path / "runs" / "rank0")) == ["best.pt", "history.json", "last.pt"]


def _equiv_worker(out):
    world, rank, device = T.init_distributed("cpu")
    try:
        assert world == 2
        tl, vl, nc = build_loaders("pathfinder-colors", img_size=32, batch_size=32, num_workers=0, **EQUIV)
        torch.manual_seed(0)
        model = TinyNet(nc)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        h = T.fit(model, tl, vl, T.TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, ema=0.9, progress=False,
                                               log=True, out_dir=os.path.join(out, "runs", f"rank{rank}")))
        fixed = TinyNet(nc)
        fixed.load_state_dict(init)
        ev = T.evaluate(fixed, vl, device)
        n = torch.tensor([len(vl.sampler)])
        torch.distributed.all_reduce(n)
        _, vl_whole, _ = build_loaders("pathfinder-colors", img_size=32, batch_size=32, num_workers=0,
                                       world_size=1, rank=0, **EQUIV)
        ev_whole = T.evaluate(fixed, vl_whole, device)
        if rank == 0:
            torch.save({"model": model.state_dict(), "ema": h.ema.state_dict(), "history": dict(h),
                        "eval": ev, "eval_n": [ev["n"], int(n)], "eval_unsharded": ev_whole},
                       os.path.join(out, "ddp.pt"))
    finally:
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------
# SIGKILL after epoch 2 + --resume == the unbroken run
# ---------------------------------------------------------------------------------------------------------
CLI = ["lkca_t", "--data", "nearest-color", "--epochs", "3", "--batch-size", "16", "--train-size", "64",
       "--val-size", "32", "--max-steps-per-epoch", "2", "--mixup", "0.8", "--cutmix", "1.0", "--ema", "0.9",
       "--no-progress"]


def _compare_checkpoints(a_path, b_path):
    a, b = (torch.load(p, map_location="cpu", weights_only=False) for p in (a_path, b_path))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    sa, sb = a["optimizer"], b["optimizer"]
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k]), ("optimizer", i, k)
    assert a["scheduler"] == b["scheduler"]
    timing = {"time", "img_per_s"}
    assert {k: v for k, v in a["history"].items() if k not in timing} == \
           {k: v for k, v in b["history"].items() if k not in timing}
    return a["history"]


@pytest.mark.slow
@pytest.mark.parametrize("nproc,workers", [(1, 0), (1, 2), (2, 0), (2, 2)])
def test_sigkill_after_epoch_2_then_resume_is_exact(tmp_path, nproc, workers):
    """With workers, the data is CIFAR-format files with the paper's augmentation (random crop, flip,
    AutoAugment, RandomErasing), drawn inside the worker processes: the case a persistent loader got wrong."""
    args = CLI + ["--workers", str(workers)]
    env = {}
    if workers:
        write_cifar(str(tmp_path / "data"))
        args = [a for a in args] + ["--data", "cifar10", "--root", str(tmp_path / "data"), "--train-size", "40"]
        env = {"HVP_TEST_CIFAR": "1"}
    full = _torchrun(nproc, "cli", *args, "--out", str(tmp_path / "full"), env=env)
    assert full.returncode == 0, full.stdout + full.stderr
    assert full.stdout.count("epoch   3/3") == 1                         # rank 0 alone prints
    killed = _torchrun(nproc, "cli", *args, "--out", str(tmp_path / "b"), env={"HVP_TEST_SIGKILL_AFTER": "2", **env})
    assert killed.returncode != 0 and "epoch   3/3" not in killed.stdout, killed.stdout + killed.stderr
    resumed = _torchrun(nproc, "cli", *args, "--out", str(tmp_path / "b"), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "epoch   1/3" not in resumed.stdout
    h = _compare_checkpoints(tmp_path / "full" / "last.pt", tmp_path / "b" / "last.pt")
    assert h["epoch"] == [1, 2, 3]
    assert json.load(open(tmp_path / "b" / "history.json"))["val_acc"] == h["val_acc"]


def _cli_worker(argv):
    if os.environ.get("HVP_TEST_CIFAR"):
        skip_cifar_md5()
    after = int(os.environ.get("HVP_TEST_SIGKILL_AFTER", "0"))
    if after:
        import signal

        real, saved = T.save_checkpoint, []

        def save_then_die(*a, **kw):
            real(*a, **kw)
            saved.append(1)
            if len(saved) == after:
                os.kill(os.getpid(), signal.SIGKILL)      # no cleanup, no finally: a real crash

        T.save_checkpoint = save_then_die
    T.main(argv)


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "equiv":
        _equiv_worker(rest[0])
    elif mode == "cli":
        _cli_worker(rest)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

"""The one training loop every notebook and the CLI use.

    python -m common.train                         # LKCA-T on the embedded long-range dataset (CPU, ~4 min)
    python -m common.train vit_lkca --data cifar10 --download --epochs 100
    python -m common.train --list                  # every model name

What it does, in order of a step: (optional) MixUp/CutMix on the batch -> forward under bf16 autocast on
CUDA -> cross-entropy with label smoothing -> AdamW step -> per-step LR (linear warm-up, then cosine to
``min_lr``) -> (optional) EMA update. After each epoch: validation (of the EMA weights too, if any), a
checkpoint (``out_dir/last.pt``, written atomically, plus ``best.pt``) and a line of metrics; the history
(a dict of lists, ready for plotting) is kept in the checkpoint and in ``history.json``. ``resume=True``
continues from ``last.pt`` exactly where it stopped (model, optimizer, schedule, EMA, RNG state).

Library code used instead of hand-written: ``torch.optim.AdamW``, ``torch.optim.lr_scheduler.LambdaLR``,
``torch.optim.swa_utils.AveragedModel`` (EMA), ``torchvision.transforms.v2.MixUp/CutMix``, ``tqdm``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import importlib
import json
import math
import os
import pkgutil
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Running `python -m common.train` from the repo root puts it on sys.path; make `import papers` work from a
# notebook or another directory too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# --------------------------------------------------------------------------------------------------------
# Model registry: every paper file's MODELS dict, by name
# --------------------------------------------------------------------------------------------------------
def all_models() -> dict[str, Callable]:
    """{name: factory} gathered from the MODELS dict at the bottom of every papers/*.py."""
    import papers

    registry: dict[str, Callable] = {}
    for info in sorted(pkgutil.iter_modules(papers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"papers.{info.name}")
        for name, factory in getattr(module, "MODELS", {}).items():
            registry[name] = factory
    return registry


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a named variant (e.g. ``build_model("lkca_t", num_classes=10, img_size=32)``)."""
    registry = all_models()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(registry))}")
    return registry[name](**kwargs)


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3                 # peak learning rate (LKCA's recipe: 1e-3 at batch 128)
    min_lr: float = 1e-6             # end of the cosine
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0       # linear warm-up, in epochs (fractions allowed)
    label_smoothing: float = 0.1
    mixup: float = 0.0               # MixUp alpha (0 = off); LKCA's recipe uses 1.0
    cutmix: float = 0.0              # CutMix alpha (0 = off); LKCA's recipe uses 1.0
    mix_prob: float = 0.5            # probability that a batch is mixed at all (when mixup or cutmix > 0)
    ema: Optional[float] = None      # EMA decay of the weights, e.g. 0.999 (None = off)
    grad_clip: Optional[float] = None
    amp: bool = True                 # bf16 autocast on CUDA (ignored on CPU)
    device: Optional[str] = None     # None: cuda if available, else cpu
    seed: int = 0
    out_dir: Optional[str] = None    # checkpoints + history.json; None = keep nothing on disk
    resume: bool = False             # continue from out_dir/last.pt if it exists
    max_steps_per_epoch: Optional[int] = None  # cut epochs short (smoke runs)
    progress: bool = True            # tqdm bars
    log: bool = True                 # one line of metrics per epoch
    ema_distill_alpha: float = 0.0   # HIRI-ViT's EMA distillation (common/distill.py); 0 = off
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def pick_device(device: Optional[str] = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """LR multiplier (relative to peak) at `step`: linear warm-up to 1, then cosine down to floor/peak."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))) / peak


def _mixer(cfg: TrainConfig, num_classes: int):
    """Batch-level MixUp/CutMix from torchvision.transforms.v2 (labels become soft (B, classes))."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from torchvision.transforms import v2

    ops = []
    if cfg.mixup > 0:
        ops.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix > 0:
        ops.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def _num_classes(model: nn.Module, loader) -> int:
    for attr in ("num_classes",):
        if isinstance(getattr(model, attr, None), int):
            return getattr(model, attr)
    ds = loader.dataset
    while hasattr(ds, "dataset") and not hasattr(ds, "num_classes"):
        ds = ds.dataset
    if hasattr(ds, "num_classes"):
        return ds.num_classes
    if hasattr(ds, "classes"):
        return len(ds.classes)
    raise ValueError("cannot infer the number of classes: give the model a `num_classes` attribute")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, amp: bool = True, max_steps: Optional[int] = None) -> dict:
    """Top-1 accuracy and mean cross-entropy of `model` on `loader`."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    return {"loss": loss_sum / max(1, n), "acc": correct / max(1, n)}


def _save_atomic(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)          # a crash mid-write never leaves a truncated checkpoint


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(model: nn.Module, train_loader, val_loader, cfg: Optional[TrainConfig] = None) -> dict:
    """Train `model` and return its history: a dict of per-epoch lists (epoch, train_loss, train_acc,
    val_loss, val_acc, [val_acc_ema], lr, time). See the module docstring for what a step does."""
    cfg = cfg or TrainConfig()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    num_classes = _num_classes(model, train_loader)
    steps_per_epoch = len(train_loader)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError("the training loader is empty: check the dataset size and batch_size")
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    # No weight decay on biases, norms, position embeddings and kernels of 1-2 dims (the usual ViT recipe).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and p.numel() > 1024 else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, warmup, cfg.lr, cfg.min_lr))
    ema = None
    if cfg.ema or cfg.ema_distill_alpha > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema or 0.999), use_buffers=True)
    mixer = _mixer(cfg, num_classes)
    distiller = None
    if cfg.ema_distill_alpha > 0:
        from common import distill  # HIRI-ViT §4.5; needs a model with forward_dense

        distiller = distill.EMADistiller(alpha=cfg.ema_distill_alpha, cutmix_alpha=cfg.cutmix or 1.0)

    history = {k: [] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time")}
    if ema is not None:
        history["val_acc_ema"] = []
    start_epoch, best = 0, -1.0
    ckpt_path = os.path.join(cfg.out_dir, "last.pt") if cfg.out_dir else None
    if cfg.out_dir:
        os.makedirs(cfg.out_dir, exist_ok=True)
    if cfg.resume and ckpt_path and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        history, start_epoch, best = ck["history"], ck["epoch"] + 1, ck.get("best", -1.0)
        _set_rng_state(ck["rng"])
        if ck.get("loader_rng") is not None and getattr(train_loader, "generator", None) is not None:
            train_loader.generator.set_state(ck["loader_rng"])   # the same shuffles as an unbroken run
        if cfg.log:
            print(f"resumed from {ckpt_path} after epoch {ck['epoch'] + 1}/{cfg.epochs}")
    elif cfg.resume and cfg.log:
        print(f"resume requested but no checkpoint at {ckpt_path}; starting from scratch")

    use_amp = cfg.amp and device.type == "cuda"
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in requirements.txt; keep the loop usable without it
        tqdm = None
    t_start = time.time() - (history["time"][-1] if history["time"] else 0.0)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0.0, 0
        bar = (tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                    file=sys.stdout, dynamic_ncols=True) if cfg.progress and tqdm else None)
        for step, (x, y) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            hard_y = y
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                if distiller is not None:
                    loss, logits = distiller.loss(model, ema.module, x, y, num_classes, cfg.label_smoothing)
                else:
                    if mixer is not None and torch.rand(()) < cfg.mix_prob:
                        x, y = mixer(x, y)                      # y: (B, classes) soft labels
                    logits = model(x)                           # (B, classes)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                         "lower the learning rate or enable grad_clip")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.item() * len(hard_y)
            correct += (logits.argmax(1) == hard_y).sum().item()
            seen += len(hard_y)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if bar is not None:
            bar.close()
        val = evaluate(model, val_loader, device, cfg.amp)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss_sum / max(1, seen))
        history["train_acc"].append(correct / max(1, seen))
        history["val_loss"].append(val["loss"])
        history["val_acc"].append(val["acc"])
        history["lr"].append(scheduler.get_last_lr()[0])
        history["time"].append(time.time() - t_start)
        msg = ""
        if ema is not None:
            history["val_acc_ema"].append(evaluate(ema.module, val_loader, device, cfg.amp)["acc"])
            msg = f" | val acc (EMA) {history['val_acc_ema'][-1]:.4f}"
        if cfg.log:
            print(f"epoch {epoch + 1:3d}/{cfg.epochs} | train loss {history['train_loss'][-1]:.4f} "
                  f"acc {history['train_acc'][-1]:.4f} | val loss {val['loss']:.4f} acc {val['acc']:.4f}"
                  f"{msg} | {history['time'][-1]:.0f}s", flush=True)
        if cfg.out_dir:
            ck = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                  "epoch": epoch, "history": history, "best": max(best, val["acc"]), "rng": _rng_state(),
                  "loader_rng": (train_loader.generator.get_state()
                                 if getattr(train_loader, "generator", None) is not None else None),
                  "config": dataclasses.asdict(cfg)}
            _save_atomic(ck, ckpt_path)
            if val["acc"] > best:
                _save_atomic({"model": model.state_dict(), "epoch": epoch, "val_acc": val["acc"]},
                             os.path.join(cfg.out_dir, "best.pt"))
            with open(os.path.join(cfg.out_dir, "history.json"), "w") as f:
                json.dump(history, f, indent=1)
        best = max(best, val["acc"])
    return history


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------
# The default job: LKCA-T on the embedded nearest-color task (4 classes) at 32x32, 6000 generated training
# images, batch 64, 10 epochs (940 steps). LKCA-T sits at chance for ~300 steps, then learns the relation
# suddenly (measured on an idle 2-core CPU: 95.7% validation accuracy after 10 epochs, 2 min 48 s in all;
# 99.9% with 12 epochs).
DEFAULTS = dict(model="lkca_t", data=None, epochs=None, img_size=None, batch_size=64, lr=1e-3,
                train_size=None, val_size=None)


def main(argv=None) -> dict:
    from common.data import DATASETS, DEFAULT_DATASET, EMBEDDED, build_loaders, check_name
    from common.smoke import SMOKE

    p = argparse.ArgumentParser(prog="python -m common.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", default=DEFAULTS["model"], help="model name (see --list)")
    p.add_argument("--data", default=DEFAULT_DATASET, help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--root", default="data", help="where real datasets live / are downloaded to")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--epochs", type=int, default=None, help="default: 10 on the embedded data, 100 otherwise")
    p.add_argument("--img-size", type=int, default=None, help="default: the dataset's native size")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=None, help="default: 10%% of the epochs")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, help="MixUp alpha (LKCA recipe: 1.0)")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha (LKCA recipe: 1.0)")
    p.add_argument("--augment", default=None, choices=["paper", "basic", "none"],
                   help="real datasets: default 'paper' (AutoAugment + RandomErasing)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay, e.g. 0.999")
    p.add_argument("--train-size", type=int, default=None, help="subsample / number of generated images")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint folder (default runs/<model>-<data>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--smoke", action="store_true", help=f"a few steps on tiny data (also: HVP_SMOKE=1)")
    p.add_argument("--list", action="store_true", help="list the model and dataset names and exit")
    args = p.parse_args(argv)

    if args.list:
        print("models:  ", ", ".join(sorted(all_models())))
        print("datasets:", ", ".join(DATASETS))
        return {}
    smoke = args.smoke or SMOKE
    data = check_name(args.data)
    embedded = data in EMBEDDED
    registry = all_models()
    if args.model not in registry:   # fail before generating or loading any data
        build_model(args.model)
    epochs = args.epochs or (1 if smoke else (10 if embedded else 100))
    train_loader, val_loader, num_classes = build_loaders(
        data, img_size=args.img_size, batch_size=args.batch_size, root=args.root, download=args.download,
        smoke=smoke, train_size=args.train_size or (6000 if embedded else None), val_size=args.val_size,
        seed=args.seed, augment=args.augment or "paper", num_workers=args.workers)
    img_size = args.img_size or train_loader.dataset[0][0].shape[-1]
    model = build_model(args.model, num_classes=num_classes, img_size=img_size)
    n_params = sum(p.numel() for p in model.parameters())
    out = args.out or os.path.join("runs", f"{args.model}-{data}" + ("-smoke" if smoke else ""))
    print(f"model {args.model} ({n_params / 1e6:.2f}M params) | data {data} ({len(train_loader.dataset)} train / "
          f"{len(val_loader.dataset)} val, {num_classes} classes, {img_size}px) | device {pick_device(args.device)} "
          f"| {epochs} epochs | checkpoints in {out}/")
    cfg = TrainConfig(epochs=epochs, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_epochs=args.warmup_epochs if args.warmup_epochs is not None else max(0.5, 0.1 * epochs),
                      label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix, ema=args.ema,
                      device=args.device, seed=args.seed, out_dir=out, resume=args.resume,
                      max_steps_per_epoch=3 if smoke else None, progress=not args.no_progress)
    history = fit(model, train_loader, val_loader, cfg)
    if history["val_acc"]:
        final = history["val_acc"][-1]
        chance = 1.0 / num_classes
        print(f"final validation accuracy: {100 * final:.2f}% (chance {100 * chance:.1f}%) after "
              f"{history['epoch'][-1]} epochs in {history['time'][-1]:.0f}s")
    return history


if __name__ == "__main__":
    main()

"""The one training loop every notebook and the CLI use, on one process or many (torchrun + DDP).

    python -m common.train                         # LKCA-T on the embedded long-range dataset (CPU, minutes)
    python -m common.train vit_lkca --data cifar10 --download --epochs 100
    torchrun --standalone --nproc_per_node=4 -m common.train vit_lkca --data cifar10 --batch-size 32
    python -m common.train --list                  # every model name; --help: every flag

What a step does: (optional) MixUp/CutMix on the batch (or HIRI-ViT's EMA distillation, common/distill.py)
-> forward under autocast on CUDA (bf16 where supported, else fp16 with a GradScaler) -> cross-entropy with
label smoothing -> backward (``accum_steps`` batches per step; under DDP the gradient all-reduce happens on
the last one only, ``no_sync`` on the others) -> AdamW step (no weight decay on 1-D tensors and on what the
model's ``no_weight_decay()`` lists) -> per-step LR (linear warm-up, then a cosine that reaches ``min_lr`` on
the last step) -> (optional) EMA update with a warmed-up decay. After each epoch: validation over the whole
validation set (sharded and all-reduced under DDP: exact, nothing duplicated or dropped), of the EMA weights
too; rank 0 prints a line (with images/s), writes ``out_dir/last.pt`` and ``best.pt`` atomically (temp file +
``os.replace``) and ``history.json``.

Reproducibility: ``main`` seeds before it builds the data and the model, so the same command gives the same
weights bit for bit on a CPU. Every epoch reseeds from (seed, epoch, rank) (shuffle, data workers, mixing,
drop-path), so ``resume=True`` continues from ``last.pt`` exactly where the unbroken run would be, with 1 or
N processes and any number of workers (tests/test_ddp.py kills a run with SIGKILL and compares). ``--resume``
refuses a checkpoint of another model, dataset or configuration, naming both, before touching anything.

Batches: ``--batch-size`` is per process (timm's convention); the global batch is batch x processes x
``accum_steps``. ``common.data.TrainSampler`` is the one sampler for every world size, so 1 x 64,
1 x 32 x accum 2 and 2 processes x 32 compute the same update (up to the order of float sums).

Library code used instead of hand-written: ``torch.optim.AdamW``, ``torch.optim.lr_scheduler.LambdaLR``,
``torch.optim.swa_utils.AveragedModel`` (EMA), ``torch.nn.parallel.DistributedDataParallel``,
``torchvision.transforms.v2.MixUp/CutMix``, ``tqdm``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import hashlib
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
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

# Running `python -m common.train` from the repo root puts it on sys.path; make `import papers` work from a
# notebook or another directory too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# --------------------------------------------------------------------------------------------------------
from common.data import TrainSampler  # noqa: E402  (after the sys.path fix above)


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
# Configuration (the CLI's training flags are generated from these fields: one source of defaults)
# --------------------------------------------------------------------------------------------------------
def _f(default, help: str, **kw):
    """A dataclass field whose help text the CLI shows (``python -m common.train --help``)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    epochs: int = _f(10, "epochs")
    lr: float = _f(1e-3, "peak learning rate (LKCA's recipe: 1e-3 at batch 128)")
    min_lr: float = _f(1e-6, "learning rate at the end of the cosine")
    weight_decay: float = _f(0.05, "AdamW weight decay (never on biases, norms, 1-D tensors, no_weight_decay())")
    warmup_epochs: float = _f(1.0, "linear warm-up in epochs, fractions allowed; capped at half the run "
                                   "so that the cosine always decays")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy")
    mixup: float = _f(0.0, "MixUp alpha (0 = off; LKCA's recipe: 1.0)")
    cutmix: float = _f(0.0, "CutMix alpha (0 = off; LKCA's recipe: 1.0)")
    mix_prob: float = _f(0.5, "probability that a batch is mixed when mixup or cutmix > 0 (0.5: the LKCA "
                              "authors' main.py; timm's default is 1.0)")
    ema: Optional[float] = _f(None, "EMA decay of the weights, e.g. 0.999")
    ema_warmup: bool = _f(True, "warm the EMA decay up: min(ema, (1 + n) / (10 + n)) after n updates")
    grad_clip: Optional[float] = _f(None, "clip the gradient norm to this value")
    accum_steps: int = _f(1, "gradient accumulation: one optimizer step per this many batches")
    amp: bool = _f(True, "mixed precision on CUDA: bf16 where supported, else fp16 with a GradScaler")
    compile: bool = _f(False, "torch.compile the model")
    channels_last: bool = _f(False, "channels-last memory format for the model and the images")
    sync_bn: bool = _f(False, "SyncBatchNorm across processes under DDP (CUDA only)")
    device: Optional[str] = _f(None, "cuda, mps or cpu")
    seed: int = _f(0, "seed of the model's initialisation, shuffles, augmentations and mixing")
    out_dir: Optional[str] = _f(None, "folder for checkpoints and history.json (fit: None = nothing on disk)", cli="--out")
    resume: bool = _f(False, "continue from <out>/last.pt if it exists")
    max_steps_per_epoch: Optional[int] = _f(None, "cut epochs short (optimizer steps; smoke runs)")
    progress: bool = _f(True, "tqdm progress bars (rank 0 only)")
    log: bool = _f(True, "one line of metrics per epoch (rank 0 only)")
    ema_distill_alpha: float = _f(0.0, "HIRI-ViT's EMA distillation weight alpha (common/distill.py); 0 = off")
    extra: dict = _f({}, "free-form notes kept in the checkpoint (the CLI stores the model and dataset names)",
                     cli=None)

    def __post_init__(self):
        def bad(name, want):
            raise ValueError(f"TrainConfig.{name} (--{name.replace('_', '-')}) must be {want}, "
                             f"got {getattr(self, name)!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            bad("epochs", "an integer >= 1")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            bad("lr" if self.lr <= 0 else "min_lr", "> 0 with 0 <= min_lr <= lr")
        if self.weight_decay < 0:
            bad("weight_decay", ">= 0")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", ">= 0")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "in [0, 1)")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                bad(name, ">= 0 (0 = off)")
        if not 0 <= self.mix_prob <= 1:
            bad("mix_prob", "in [0, 1]")
        if self.ema is not None and not 0 < self.ema < 1:
            bad("ema", "in (0, 1), e.g. 0.999, or None (off)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            bad("grad_clip", "> 0 or None (off)")
        if not isinstance(self.accum_steps, int) or self.accum_steps < 1:
            bad("accum_steps", "an integer >= 1")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            bad("max_steps_per_epoch", ">= 1 or None")
        if not 0 <= self.ema_distill_alpha <= 1:
            bad("ema_distill_alpha", "in [0, 1]")


class ResumeError(ValueError):
    """--resume met a checkpoint written by another model, dataset or an incompatible configuration."""


class History(dict):
    """The per-epoch history (a plain dict of lists, JSON-serialisable). ``history.ema`` is the EMA model
    (``None`` without EMA), so the averaged weights are returned by ``fit`` too."""

    ema: Optional[nn.Module] = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)                 # also seeds every CUDA device
    try:
        import numpy as np

        np.random.seed(seed % 2 ** 32)
    except ImportError:
        pass


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """One seed per (run seed, epoch, process): every epoch's randomness (mixing, drop-path, the data
    workers' augmentations) is a function of these three numbers, so a resumed run needs no RNG state."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------------------
# Devices, processes, precision
# --------------------------------------------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(world_size, rank) of the initialised process group, (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else cuda > mps > cpu. Under torchrun, cuda means cuda:LOCAL_RANK."""
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def init_distributed(device: Optional[str] = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the
    environment): nccl on CUDA, gloo on CPU; each process binds cuda:LOCAL_RANK. Without torchrun: (1, 0).
    Returns (world_size, rank, device). Pair it with ``dist.destroy_process_group()`` (``main`` does, on
    every exit path)."""
    dev = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    w, r = dist_info()
    return w, r, dev


def amp_settings(device: torch.device, amp: bool = True) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None, use a GradScaler): bf16 on CUDA where supported, fp16 + GradScaler where
    not (e.g. Colab's T4); nothing on CPU and MPS (full fp32)."""
    if not amp or device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------------
# Schedule, parameter groups, EMA, mixing
# --------------------------------------------------------------------------------------------------------
def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """LR multiplier (relative to peak) at optimizer step ``step`` (0-based) of ``total``: linear warm-up
    to 1 over ``warmup`` steps, then a cosine that reaches floor/peak exactly at the last step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return (floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))) / peak


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names that ``no_weight_decay()`` lists on the model or any submodule (timm's convention), as full
    parameter names or prefixes (e.g. ``pos_embed`` or ``blocks.0.attn.rel_h``)."""
    names = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups by the usual rule: no weight decay for tensors with ndim <= 1 (biases, norm scales,
    LayerScale) and for what the model lists in ``no_weight_decay()`` (position embeddings, tokens, relative
    position tables); decay for everything else. Each group keeps its ``param_names``."""
    skip = no_weight_decay_names(model)
    groups = {"decay": ([], []), "no_decay": ([], [])}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or any(name == s or name.startswith(s + ".") for s in skip)
        params, names = groups["no_decay" if exempt else "decay"]
        params.append(p)
        names.append(name)
    return [{"params": groups["decay"][0], "param_names": groups["decay"][1], "weight_decay": weight_decay},
            {"params": groups["no_decay"][0], "param_names": groups["no_decay"][1], "weight_decay": 0.0}]


def ema_avg_fn(decay: float, warmup: bool = True):
    """``multi_avg_fn`` for ``AveragedModel``: ema <- d * ema + (1 - d) * current, with
    d = min(decay, (1 + n) / (10 + n)) after n updates when ``warmup`` (TensorFlow's
    ExponentialMovingAverage(num_updates)): early on the average forgets the random initialisation quickly
    (without it, after 940 steps at 0.999 the EMA still holds 0.999^940 = 39% of the initial weights)."""

    @torch.no_grad()
    def update(ema_list, current_list, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        if torch.is_floating_point(ema_list[0]):
            torch._foreach_lerp_(ema_list, current_list, 1 - d)
        else:                                   # integer buffers (BatchNorm's num_batches_tracked): copy
            for e, c in zip(ema_list, current_list):
                e.copy_(c)

    return update


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
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes
    ds = loader.dataset
    while hasattr(ds, "dataset") and not hasattr(ds, "num_classes"):
        ds = ds.dataset
    if hasattr(ds, "num_classes"):
        return ds.num_classes
    if hasattr(ds, "classes"):
        return len(ds.classes)
    raise ValueError("cannot infer the number of classes: give the model a `num_classes` attribute")


# --------------------------------------------------------------------------------------------------------
# Evaluation (exact under DDP)
# --------------------------------------------------------------------------------------------------------
def _sharded(loader) -> bool:
    """True when the loader's sampler gives this process only its share of the data."""
    s = getattr(loader, "sampler", None)
    return getattr(s, "world_size", getattr(s, "num_replicas", 1)) > 1


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, amp: bool = True, max_steps: Optional[int] = None,
             channels_last: bool = False) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` over the whole loader. Under DDP with a sharded
    loader (``common.data.EvalShardSampler``: every sample exactly once over all processes) the sums are
    all-reduced, so every process returns the metrics of the full validation set; an unsharded loader is
    evaluated whole on every process. Also returns ``n``, the number of samples counted."""
    device = device or next(model.parameters()).device
    dtype, _ = amp_settings(device, amp)
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)          # loss sum, correct, n
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, dtype):
            logits = model(x)                                            # (B, classes)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
    if _sharded(loader) and dist_info()[0] > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    loss, correct, n = sums.tolist()
    return {"loss": loss / max(1, n), "acc": correct / max(1, n), "n": int(n)}


# --------------------------------------------------------------------------------------------------------
# Checkpoints (atomic; resumable only into the same job)
# --------------------------------------------------------------------------------------------------------
def _save_atomic(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)          # a crash mid-write never leaves a truncated checkpoint


def save_checkpoint(path: str, run: "_Run", epoch: int, history: dict, best: float) -> None:
    """Everything a resume needs, written atomically. No RNG state is needed: each epoch reseeds from
    (seed, epoch, rank)."""
    _save_atomic({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                  "scheduler": run.scheduler.state_dict(),
                  "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                  "ema": run.ema.state_dict() if run.ema is not None else None,
                  "epoch": epoch, "history": dict(history), "best": best, "meta": run.meta,
                  "config": dataclasses.asdict(run.cfg)}, path)


def load_checkpoint(path: str) -> dict:
    """Load on the CPU (``load_state_dict`` then copies each tensor to where its module lives)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def check_resumable(ck: dict, meta: dict, path: str) -> None:
    """Raise ResumeError naming both values if the checkpoint belongs to another job."""
    old = ck.get("meta")
    if old is None:
        raise ResumeError(f"cannot resume from {path}: it has no job description (written by an older version "
                          "of common/train.py); start without --resume or use another --out")
    for key, new in meta.items():
        if old.get(key) != new:
            raise ResumeError(f"cannot resume from {path}: it was written for {key} = {old.get(key)!r}, this run "
                              f"has {key} = {new!r}. Use another --out, or rerun with the checkpoint's settings.")


def _restore(ck: dict, run: "_Run") -> None:
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    if run.scaler is not None and ck.get("scaler") is not None:
        run.scaler.load_state_dict(ck["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(ck["ema"])


def _job_meta(model: nn.Module, loader, cfg: TrainConfig, num_classes: int, global_batch: int) -> dict:
    """What must match for --resume to continue the same job."""
    ds = loader.dataset
    shapes = ";".join(f"{n}:{tuple(p.shape)}" for n, p in model.state_dict().items())
    return {"model": cfg.extra.get("model", type(model).__name__),
            "architecture": hashlib.sha1(shapes.encode()).hexdigest()[:12],
            "num_params": sum(p.numel() for p in model.parameters()),
            "dataset": cfg.extra.get("data", type(ds).__name__), "train_samples": len(ds),
            "num_classes": num_classes, "epochs": cfg.epochs, "ema": cfg.ema,
            "ema_distill_alpha": cfg.ema_distill_alpha, "global_batch": global_batch}


# --------------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything fit() builds once and one epoch uses."""
    cfg: TrainConfig
    model: nn.Module                 # the plain model (state_dict, EMA source)
    net: nn.Module                   # what the step calls: model, compiled and/or DDP-wrapped
    eval_net: nn.Module              # what evaluation calls (compiled, not DDP)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Optional[torch.amp.GradScaler]
    ema: Optional[nn.Module]
    mixer: Optional[Callable]
    distiller: Optional[object]
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    num_classes: int
    steps_per_epoch: int             # optimizer steps
    world: int
    rank: int
    meta: dict = field(default_factory=dict)


def train_one_epoch(run: _Run, loader, epoch: int) -> dict:
    """One epoch of optimizer steps, each over ``accum_steps`` batches (DDP's gradient all-reduce only on
    the last). Returns the epoch's train loss/accuracy (over all processes), the LR of its last step,
    images/s and seconds."""
    cfg, model, net, device = run.cfg, run.model, run.net, run.device
    accum = cfg.accum_steps
    ddp = isinstance(net, DDP)
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)           # loss sum, correct, seen
    bar = None
    if cfg.progress and run.rank == 0:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       file=sys.stdout, dynamic_ncols=True)
        except ImportError:  # tqdm is in requirements.txt; keep the loop usable without it
            pass
    t0 = time.time()
    batches = iter(loader)
    lr = run.optimizer.param_groups[0]["lr"]
    for step in range(run.steps_per_epoch):
        run.optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            hard_y = y
            sync = micro == accum - 1
            with (net.no_sync() if ddp and not sync else contextlib.nullcontext()):
                with _autocast(device, run.amp_dtype):
                    if run.distiller is not None:
                        loss, logits = run.distiller.loss(net, run.ema.module, x, y, run.num_classes,
                                                          cfg.label_smoothing)
                    else:
                        if run.mixer is not None and float(torch.rand(())) < cfg.mix_prob:
                            x, y = run.mixer(x, y)               # y: (B, classes) soft labels
                        logits = net(x)                          # (B, classes)
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if run.world == 1 and not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                             "lower the learning rate or enable grad_clip")
                scaled = loss / accum                            # the mean over the accum_steps batches
                (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
            sums[0] += loss.detach().double() * len(hard_y)
            sums[1] += (logits.detach().argmax(1) == hard_y).sum()
            sums[2] += len(hard_y)
        if cfg.grad_clip:
            if run.scaler is not None:
                run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = run.optimizer.param_groups[0]["lr"]                 # the LR this step uses
        if run.scaler is not None:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    if bar is not None:
        bar.close()
    if run.world > 1:
        dist.all_reduce(sums)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.time() - t0
    loss_sum, correct, seen = sums.tolist()
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"the loss became {loss_sum} in epoch {epoch + 1}; lower the learning rate "
                                 "or enable grad_clip")
    return {"loss": loss_sum / max(1, seen), "acc": correct / max(1, seen), "lr": lr,
            "img_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


# --------------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------------
def _setup(model: nn.Module, train_loader, cfg: TrainConfig) -> _Run:
    world, rank = dist_info()
    device = pick_device(cfg.device)
    if world > 1 and not isinstance(getattr(train_loader, "sampler", None), (TrainSampler, DistributedSampler)):
        raise ValueError("under torchrun the training loader needs a distributed sampler: build it with "
                         "common.data.build_loaders (after init_distributed) or give it a DistributedSampler")
    if cfg.sync_bn and world > 1:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU each "
                             "process normalises its own batch: drop --sync-bn")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    num_classes = _num_classes(model, train_loader)
    n_batches = len(train_loader)
    steps = n_batches // cfg.accum_steps
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"the training loader has {n_batches} batches per process, fewer than accum_steps="
                         f"{cfg.accum_steps}: check the dataset size, batch_size and accum_steps")
    total = cfg.epochs * steps
    warmup = min(int(round(cfg.warmup_epochs * steps)), total // 2)   # at most half the run: it must decay
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, warmup, cfg.lr, cfg.min_lr))
    amp_dtype, use_scaler = amp_settings(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    ema = None
    if cfg.ema or cfg.ema_distill_alpha > 0:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(model, multi_avg_fn=ema_avg_fn(cfg.ema or 0.999, cfg.ema_warmup), use_buffers=True)
    distiller = None
    if cfg.ema_distill_alpha > 0:
        from common import distill  # HIRI-ViT §4.5; needs a model with forward_dense

        # Eq. 4 is CutMix; with neither --mixup nor --cutmix the paper's CutMix (alpha 1) is used.
        no_mix = cfg.mixup <= 0 and cfg.cutmix <= 0
        distiller = distill.EMADistiller(alpha=cfg.ema_distill_alpha, cutmix_alpha=1.0 if no_mix else cfg.cutmix,
                                         mixup_alpha=cfg.mixup, mix_prob=cfg.mix_prob)
    net = torch.compile(model) if cfg.compile else model
    eval_net = net
    if world > 1:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    global_batch = (train_loader.batch_size or 1) * world * cfg.accum_steps
    run = _Run(cfg, model, net, eval_net, optimizer, scheduler, scaler, ema, _mixer(cfg, num_classes), distiller,
               device, amp_dtype, num_classes, steps, world, rank)
    run.meta = _job_meta(model, train_loader, cfg, num_classes, global_batch)
    return run


def fit(model: nn.Module, train_loader, val_loader, cfg: Optional[TrainConfig] = None) -> History:
    """Train ``model`` and return its history: a dict of per-epoch lists (epoch, train_loss, train_acc,
    val_loss, val_acc, [val_acc_ema, val_loss_ema], lr (the last step's), img_per_s, time), with the EMA model
    as ``history.ema``. Under torchrun (an initialised process group) it trains with DDP; only rank 0 prints
    and writes. See the module docstring for what a step does."""
    cfg = cfg or TrainConfig()
    seed_everything(cfg.seed)
    run = _setup(model, train_loader, cfg)
    model, rank, lead = run.model, run.rank, run.rank == 0
    log = cfg.log and lead
    keys = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "img_per_s", "time"]
    if run.ema is not None:
        keys[5:5] = ["val_loss_ema", "val_acc_ema"]
    history = History({k: [] for k in keys})
    history.ema = run.ema.module if run.ema is not None else None
    start_epoch, best = 0, -1.0
    ckpt_path = os.path.join(cfg.out_dir, "last.pt") if cfg.out_dir else None

    if cfg.resume and ckpt_path:
        box = [load_checkpoint(ckpt_path) if lead and os.path.exists(ckpt_path) else None]
        if run.world > 1:
            dist.broadcast_object_list(box, src=0)   # rank 0 reads; no shared file system needed
        ck = box[0]
        if ck is not None:
            check_resumable(ck, run.meta, ckpt_path)  # before anything is loaded or written
            _restore(ck, run)
            history.update({k: ck["history"].get(k, []) for k in keys})
            start_epoch, best = ck["epoch"] + 1, ck.get("best", -1.0)
            if log:
                print(f"resumed from {ckpt_path} after epoch {ck['epoch'] + 1}/{cfg.epochs}")
        elif log:
            print(f"resume requested but no checkpoint at {ckpt_path}; starting from scratch")
    if cfg.out_dir and lead:
        os.makedirs(cfg.out_dir, exist_ok=True)
        if getattr(train_loader, "persistent_workers", False) and log:
            print("note: the training loader keeps persistent workers, whose seeds are drawn once: a resumed run "
                  "will augment differently (common.data.build_loaders does not do this)")

    t_start = time.time() - (history["time"][-1] if history["time"] else 0.0)
    for epoch in range(start_epoch, cfg.epochs):
        # Every epoch's randomness is a function of (seed, epoch, rank): the shuffle (sampler.set_epoch), the
        # data workers' seeds (drawn from the loader's generator), mixing and drop-path (the global RNGs).
        s = _epoch_seed(cfg.seed, epoch, rank)
        seed_everything(s)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(s)
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        tr = train_one_epoch(run, train_loader, epoch)
        val = evaluate(run.eval_net, val_loader, run.device, cfg.amp, channels_last=cfg.channels_last)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(tr["loss"])
        history["train_acc"].append(tr["acc"])
        history["val_loss"].append(val["loss"])
        history["val_acc"].append(val["acc"])
        history["lr"].append(tr["lr"])
        history["img_per_s"].append(tr["img_per_s"])
        history["time"].append(time.time() - t_start)
        msg = ""
        if run.ema is not None:
            val_ema = evaluate(run.ema.module, val_loader, run.device, cfg.amp, channels_last=cfg.channels_last)
            history["val_loss_ema"].append(val_ema["loss"])
            history["val_acc_ema"].append(val_ema["acc"])
            msg = f" | val acc (EMA) {val_ema['acc']:.4f}"
        if log:
            print(f"epoch {epoch + 1:3d}/{cfg.epochs} | train loss {tr['loss']:.4f} acc {tr['acc']:.4f} | "
                  f"val loss {val['loss']:.4f} acc {val['acc']:.4f}{msg} | lr {tr['lr']:.2e} | "
                  f"{tr['img_per_s']:.0f} img/s | {history['time'][-1]:.0f}s", flush=True)
        improved = val["acc"] > best
        best = max(best, val["acc"])
        if cfg.out_dir and lead:
            save_checkpoint(ckpt_path, run, epoch, history, best)
            if improved:
                _save_atomic({"model": model.state_dict(),
                              "ema": run.ema.module.state_dict() if run.ema is not None else None,
                              "epoch": epoch, "val_acc": val["acc"], "meta": run.meta},
                             os.path.join(cfg.out_dir, "best.pt"))
            tmp = os.path.join(cfg.out_dir, "history.json.tmp")
            with open(tmp, "w") as f:
                json.dump(history, f, indent=1)
            os.replace(tmp, os.path.join(cfg.out_dir, "history.json"))
    return history


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------
# The default job: LKCA-T on the embedded nearest-color task (4 classes) at 32x32, 6000 generated training
# images, batch 64, 10 epochs (930 steps). Measured under the lock on the 2-core machine: 95.3% validation
# accuracy, 4 min 27 s (README, "Two commands"; the learning curve: README, "The embedded dataset").
DEFAULT_MODEL = "lkca_t"
_JOB_RULES = {"epochs": "10 on the embedded data, 100 on real data, 1 with --smoke",
              "warmup_epochs": "10%% of the epochs, at least 0.5",
              "max_steps_per_epoch": "3 with --smoke, else all", "out_dir": "runs/<model>-<data>",
              "device": "cuda > mps > cpu"}


def _cli_type(annotation: str):
    base = annotation.replace("Optional[", "").rstrip("]")
    return {"int": int, "float": float, "str": str, "bool": bool}[base]


def build_parser() -> argparse.ArgumentParser:
    """The CLI: job flags (model, data, loader, model options) + one flag per TrainConfig field, generated
    from the dataclass so the defaults live in one place."""
    from common.data import DATASETS, DEFAULT_DATASET

    p = argparse.ArgumentParser(
        prog="python -m common.train", description=__doc__.split("\n\n")[0],
        epilog="Several processes: torchrun --standalone --nproc_per_node=N -m common.train MODEL ... "
               "(--batch-size is per process; see the README).")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model name (see --list; default {DEFAULT_MODEL})")
    job = p.add_argument_group("job")
    job.add_argument("--data", default=DEFAULT_DATASET, help=f"dataset: {', '.join(DATASETS)} (default {DEFAULT_DATASET})")
    job.add_argument("--root", default="data", help="where real datasets live / are downloaded to")
    job.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    job.add_argument("--img-size", type=int, default=None, help="default: the dataset's native size")
    job.add_argument("--batch-size", type=int, default=64,
                     help="per process (timm's convention): global batch = batch x processes x --accum-steps "
                          "(default 64)")
    job.add_argument("--augment", default=None, choices=["paper", "basic", "none"],
                     help="real datasets: default 'paper' (AutoAugment + RandomErasing)")
    job.add_argument("--repeats", type=int, default=1,
                     help="repeated augmentation: each image r times per epoch on different processes "
                          "(LKCA/DeiT recipe: 3; default 1 = off)")
    job.add_argument("--drop-path", type=float, default=None,
                     help="stochastic-depth rate (default: the model's, i.e. the paper's; 0 turns it off)")
    job.add_argument("--train-size", type=int, default=None, help="subsample / number of generated images "
                     "(default: 6000 generated on the embedded data, all of a real dataset)")
    job.add_argument("--val-size", type=int, default=None)
    job.add_argument("--workers", type=int, default=None, help="data-loader workers per process")
    job.add_argument("--smoke", action="store_true", help="a few steps on tiny data (also: HVP_SMOKE=1)")
    job.add_argument("--list", action="store_true", help="list the model and dataset names and exit")
    tc = p.add_argument_group("training (TrainConfig fields; defaults from common.train.TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("cli", "--" + f.name.replace("_", "-"))
        if flag is None:
            continue
        kind = _cli_type(f.type)
        default_txt = _JOB_RULES.get(f.name, "off" if f.default is None else f.default)
        help_txt = f"{f.metadata['help']} (default: {default_txt})"
        if kind is bool:
            tc.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_txt)
        else:
            tc.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(), help=help_txt)
    return p


def _build_named_model(name: str, drop_path: Optional[float], **kw) -> nn.Module:
    """build_model with the stochastic-depth rate passed under the name the paper file uses."""
    if drop_path is None:
        return build_model(name, **kw)
    rng = torch.get_rng_state()
    for key in ("drop_path_rate", "drop_path"):
        torch.set_rng_state(rng)                     # the same initialisation whichever name is accepted
        try:
            return build_model(name, **kw, **{key: drop_path})
        except TypeError as e:
            if key not in str(e):
                raise
    raise ValueError(f"model {name!r} has no stochastic depth (neither drop_path_rate nor drop_path); "
                     "leave --drop-path out")


def main(argv=None) -> dict:
    """``python -m common.train``: parse, set up the process group (under torchrun), build the data and the
    model (seeded first), fit. Mistakes (unknown names, a missing dataset, a bad value, an incompatible
    --resume) print one message and exit with status 2, as argparse does."""
    from common.data import EMBEDDED, DatasetNotFoundError, build_loaders, check_name
    from common.smoke import SMOKE

    p = build_parser()
    args = p.parse_args(argv)
    if args.list:
        print("models:  ", ", ".join(sorted(all_models())))
        print("datasets:", ", ".join(__import__("common.data").data.DATASETS))
        return {}
    try:
        world, rank, device = init_distributed(args.device)

        def fail(message: str):
            # argparse's format (prog: error: message, status 2) without the 25-line usage; rank 0 only
            p.exit(2, f"{p.prog}: error: {message}\n(python -m common.train --help lists the flags)\n"
                   if rank == 0 else None)

        try:
            return _main(args, fail, world, rank, device, SMOKE, EMBEDDED, build_loaders, check_name)
        except (ResumeError, DatasetNotFoundError) as e:
            fail(str(e))
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _main(args, fail, world, rank, device, SMOKE, EMBEDDED, build_loaders, check_name) -> dict:
    smoke = args.smoke or SMOKE
    try:
        data = check_name(args.data)
    except ValueError as e:
        fail(str(e))
    if args.model not in all_models():       # fail before generating or loading any data
        try:
            build_model(args.model)
        except ValueError as e:
            fail(str(e))
    for name in ("batch_size", "repeats"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    embedded = data in EMBEDDED
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name) and getattr(args, f.name) is not None}
    epochs = given.pop("epochs", None)
    epochs = epochs if epochs is not None else (1 if smoke else (10 if embedded else 100))
    given.setdefault("warmup_epochs", max(0.5, 0.1 * epochs))
    if smoke:
        given.setdefault("max_steps_per_epoch", 3)
    out = given.pop("out_dir", None) or os.path.join("runs", f"{args.model}-{data}" + ("-smoke" if smoke else ""))
    try:
        cfg = TrainConfig(epochs=epochs, out_dir=out, **given)
    except ValueError as e:
        fail(str(e))
    seed_everything(cfg.seed)                # before the data and the model: the same command, the same run
    train_loader, val_loader, num_classes = build_loaders(
        data, img_size=args.img_size, batch_size=args.batch_size, root=args.root, download=args.download,
        smoke=smoke, train_size=args.train_size or (6000 if embedded else None), val_size=args.val_size,
        seed=cfg.seed, augment=args.augment or "paper", num_workers=args.workers, repeats=args.repeats)
    img_size = args.img_size or train_loader.dataset[0][0].shape[-1]
    seed_everything(cfg.seed)
    try:
        model = _build_named_model(args.model, args.drop_path, num_classes=num_classes, img_size=img_size)
    except ValueError as e:
        fail(str(e))
    cfg.extra.update(model=args.model, data=data, img_size=img_size, drop_path=args.drop_path,
                     batch_size=args.batch_size, world_size=world)
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"model {args.model} ({n_params / 1e6:.2f}M params) | data {data} ({len(train_loader.dataset)} train / "
              f"{len(val_loader.dataset)} val, {num_classes} classes, {img_size}px) | device {device} x {world} "
              f"process{'es' if world > 1 else ''} | batch {args.batch_size} x {world} x {cfg.accum_steps} = "
              f"{args.batch_size * world * cfg.accum_steps} | {epochs} epochs | checkpoints in {out}/", flush=True)
    history = fit(model, train_loader, val_loader, cfg)
    if history["val_acc"] and rank == 0:
        final = history["val_acc"][-1]
        print(f"final validation accuracy: {100 * final:.2f}% (chance {100 / num_classes:.1f}%) after "
              f"{history['epoch'][-1]} epochs in {history['time'][-1]:.0f}s", flush=True)
    return history


if __name__ == "__main__":
    main()

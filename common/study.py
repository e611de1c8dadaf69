"""Multi-seed studies: K arms x S seeds, one recipe, one JSON file of results.

One training run is an anecdote: two seeds of the same model on the same data often differ by more than two
models do. A *study* trains every arm (a model, or a model with one option changed) with every seed, with
the same data, the same steps and the same recipe, and reports each arm's mean +- standard deviation and,
for every pair of arms, the **paired** difference (same seed = same data order and augmentation draws) with
a 95% t-interval over seeds. An interval that contains 0 means "no measurable difference at this scale".

    python -m common.study --list                       # the registered studies
    python -m common.study lkca-fashion                 # run it (or finish an interrupted run)
    python -m common.study lkca-fashion --seeds 0 1 2 3 4
    python -m common.study --show results/lkca-fashion.json

Results go to ``results/<study>.json``::

    {"study", "paper", "data", "img_size", "recipe": {...}, "question",
     "arms": {name: {"model", "model_kwargs", "cfg", ["img_size"], "params", "macs", "seeds": [...],
                     "final_val_acc": [...], "best_val_acc": [...], "histories": [...], "seconds": [...]}},
     "machine", "date"}

(``img_size`` only where an arm changes the input size; the three oldest files predate ``macs``.)

The file is rewritten (atomically) after every run, so an interrupted study resumes where it stopped: the
arms x seeds already in the file are not run again. Notebooks call ``load_or_run`` ("load the committed JSON
if it holds every arm and seed, else train") and ``plot_curves`` (mean curve with a band over seeds).

Seeds: the dataset (and, for the embedded tasks, the generated images) and the shuffle order (the training
sampler is seeded by ``data_seed``) are the same for every run; the run seed fixes the model's initialisation,
the augmentation draws, MixUp/CutMix and stochastic depth.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

RESULTS_DIR = os.path.join(_ROOT, "results")

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal 1.96 is within 2%).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95% interval)."""
    if df < 1:
        raise ValueError("an interval needs at least 2 seeds")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_std(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is 0 for one value."""
    n = len(xs)
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s


def paired_interval(a, b) -> tuple[float, float, float]:
    """Mean of the paired differences a_i - b_i and its 95% t-interval (lo, hi)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired differences need the same seeds, at least 2 (got {len(a)} and {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    m, s = mean_std(d)
    h = t975(len(d) - 1) * s / math.sqrt(len(d))
    return m, m - h, m + h


@dataclass
class Study:
    """A question, the arms that answer it, and the one recipe they share.

    ``recipe``: TrainConfig fields (epochs, lr, ...) plus the data fields ``batch_size``, ``train_size``,
    ``val_size``, ``augment``, ``num_classes``, ``difficulty`` and ``data_seed``. Each arm is
    ``{"model": name, "model_kwargs": {...}, "cfg": {...}, "img_size": int}``; an arm's ``cfg`` overrides
    recipe fields, and its ``img_size`` the study's input size (the same images, resized), only when that
    override *is* the question (e.g. HIRI-ViT's distillation alpha, or its input resolution)."""

    name: str
    paper: str
    data: str
    img_size: int
    question: str
    arms: dict
    recipe: dict = field(default_factory=dict)


DATA_KEYS = ("batch_size", "train_size", "val_size", "augment", "num_classes", "difficulty", "data_seed",
             "num_workers", "root")

# --------------------------------------------------------------------------------------------------------
# The registered studies (the ones whose results are committed in results/)
# --------------------------------------------------------------------------------------------------------
STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    STUDIES[study.name] = study
    return study


register(Study(
    name="lkca-fashion", paper="lkca", data="fashion-mnist", img_size=32,
    question="On a small real dataset, does replacing MHSA by LKCA help a ViT of the same size? (the paper's "
             "small-dataset claim; a GAP ViT arm makes the pooling equal, so the token mixer is the only "
             "difference between vit_1m_gap and lkca_t)",
    arms={"vit_1m (cls token)": {"model": "vit_1m"},
          "vit_1m (GAP)": {"model": "vit_1m", "model_kwargs": {"pool": "mean"}},
          "lkca_t (GAP)": {"model": "lkca_t"}},
    recipe=dict(epochs=5, batch_size=64, train_size=5000, val_size=2000, lr=1e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))


register(Study(
    name="convnext-fashion", paper="convnext", data="fashion-mnist", img_size=32,
    question="Does ConvNeXt's 7x7 depthwise kernel beat a 3x3 one on a small real dataset at 32 px? (the "
             "paper's §2.5 ablation in miniature)",
    arms={"atto 7x7 (paper)": {"model": "convnext_atto"},
          "atto 3x3": {"model": "convnext_atto", "model_kwargs": {"kernel_size": 3}}},
    recipe=dict(epochs=3, batch_size=128, train_size=10000, val_size=5000, lr=1e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))

register(Study(
    name="unireplknet-fashion", paper="unireplknet", data="fashion-mnist", img_size=32,
    question="At 32 px on Fashion-MNIST, do the Dilated Reparam Block's branches help UniRepLKNet (same network "
             "without them; ConvNeXt with the same widths for reference)?",
    arms={"unireplknet (branches)": {"model": "unireplknet_a", "model_kwargs": {"dims": [16, 32, 64, 128]}},
          "unireplknet (no branches)": {"model": "unireplknet_a",
                                        "model_kwargs": {"dims": [16, 32, 64, 128], "branches": False}},
          "convnext (same dims)": {"model": "convnext_atto", "model_kwargs": {"dims": [16, 32, 64, 128]}}},
    # A scaled-down budget (80 steps): accuracy is still rising at the end, so this compares early training.
    recipe=dict(epochs=2, batch_size=64, train_size=2560, val_size=2000, lr=2e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))


# iiANET's CPU miniature (the notebook's MINI): one iiABlock per stage, widths 32/64/128/192, the paper's heads
# 1/2/4/8, no stem max-pool, so at 64 px the stage maps are 29/15/8/4 and stage 1's global MHSA spans 841
# positions while its 3x3 convolutions see a few pixels.
IIANET_MINI = dict(widths=[[32], [64], [128], [192]], heads=[1, 2, 4, 8], stem_widths=[16, 32], stem_pool=False,
                   drop_rate=0.0)
register(Study(
    name="iianet-nearest64", paper="iianet", data="nearest-color", img_size=64,
    question="At 64 px on a long-range relational task (the colour of the disc nearest to the white one, at "
             "least 16 px away), does iiANET's global MHSA branch help, and do 4 key/value slots? (Table 4 "
             "(b) vs (c), Table 6, in miniature; the no-MHSA arm gives the MHSA's channels to MBConv)",
    arms={"full": {"model": "iianet", "model_kwargs": IIANET_MINI},
          "full + 4 slots": {"model": "iianet", "model_kwargs": {**IIANET_MINI, "num_registers": 4}},
          "no MHSA (Table 4 b)": {"model": "iianet_b_mbconv_dilated", "model_kwargs": IIANET_MINI}},
    recipe=dict(epochs=4, batch_size=32, train_size=4800, val_size=1000, lr=2e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.0, data_seed=0),
))

# HIRI-ViT and the four-stage M-ViT scaled down alike (about 0.7-0.8M parameters each).
HIRI_SMALL = dict(widths=[16, 32, 48, 96, 128], depths=[1, 1, 1, 2, 1], ffn_ratios=[4, 4, 4, 4, 4],
                  heads=[0, 0, 0, 2, 2])
MVIT_SMALL = dict(widths=[32, 48, 96, 128], depths=[1, 1, 2, 1], heads=[1, 1, 2, 2], ffn_ratios=[4, 4, 4, 4],
                  sr_ratios=[4, 2, 1, 1])
register(Study(
    name="hiri-resolution", paper="hiri_vit", data="fashion-mnist", img_size=32,
    question="HIRI-ViT's argument (§1, Table VII): a fifth stage makes a 2x input about as cheap as the "
             "four-stage model at 1x. Accuracy against MACs of the four-stage M-ViT and the five-stage HIRI-ViT, "
             "each at 32 px and 64 px (the same images resized; Fashion-MNIST is 28 px, so 64 px adds "
             "pixels to compute on, not detail)",
    arms={"M-ViT 4-stage @32": {"model": "mvit_s", "model_kwargs": MVIT_SMALL},
          "M-ViT 4-stage @64": {"model": "mvit_s", "model_kwargs": MVIT_SMALL, "img_size": 64},
          "HIRI-ViT 5-stage @64": {"model": "hiri_vit_s", "model_kwargs": HIRI_SMALL, "img_size": 64},
          # the same five-stage model at 1x (layout_for(32): the 224-style layout, stages at 8/4/4/2/1), so the
          # design and the resolution can be told apart
          "HIRI-ViT 5-stage @32": {"model": "hiri_vit_s", "model_kwargs": HIRI_SMALL}},
    recipe=dict(epochs=5, batch_size=64, train_size=12800, val_size=2000, lr=2e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))

register(Study(
    name="hiri-distill", paper="hiri_vit", data="fashion-mnist", img_size=32,
    question="Does EMA distillation (§4.4, Eq. 5) help? The same CutMix + EMA recipe with ema_distill_alpha 0 "
             "vs 0.5, nothing else different (ds_strides (2, 1, 2, 1): a 2x2 final map for the mask to mix)",
    arms={"CutMix + EMA": {"model": "hiri_vit_s", "model_kwargs": {**HIRI_SMALL, "ds_strides": [2, 1, 2, 1]}},
          "CutMix + EMA distillation": {"model": "hiri_vit_s",
                                        "model_kwargs": {**HIRI_SMALL, "ds_strides": [2, 1, 2, 1]},
                                        "cfg": {"ema_distill_alpha": 0.5}}},
    recipe=dict(epochs=5, batch_size=64, train_size=10000, val_size=2000, lr=2e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", cutmix=1.0, mixup=0.0, mix_prob=1.0,
                ema=0.99, ema_distill_alpha=0.0, data_seed=0),
))

# Token Fusion scaled down alike: ViT width 64 (4 heads), 12 blocks as in the paper, a thin ResNet trunk.
TF_SMALL = dict(embed_dim=64, num_heads=4, cnn_layers=[1, 1, 1, 1], cnn_width=8, cnn_base=8)
register(Study(
    name="token-fusion-grids", paper="token_fusion", data="fashion-mnist", img_size=32,
    question="The three fusion methods with their Table 1 best heads, and the grid control: at 8x8 patches "
             "late fusion ends on an 8x8 token grid, early and layer-by-layer on 4x4; with 4x4 patches they "
             "end on 8x8 too. Does the grid explain the ranking?",
    arms={"late (p8, 8x8 grid)": {"model": "token_fusion_late", "model_kwargs": {**TF_SMALL, "patch_size": 8}},
          "early (p8, 4x4 grid)": {"model": "token_fusion_early", "model_kwargs": {**TF_SMALL, "patch_size": 8}},
          "layer (p8, 4x4 grid)": {"model": "token_fusion_layer", "model_kwargs": {**TF_SMALL, "patch_size": 8}},
          "early (p4, 8x8 grid)": {"model": "token_fusion_early", "model_kwargs": {**TF_SMALL, "patch_size": 4}},
          "layer (p4, 8x8 grid)": {"model": "token_fusion_layer", "model_kwargs": {**TF_SMALL, "patch_size": 4}}},
    recipe=dict(epochs=5, batch_size=64, train_size=6400, val_size=2000, lr=1e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))

register(Study(
    name="token-fusion-heads", paper="token_fusion", data="fashion-mnist", img_size=32,
    question="The three heads of Fig. 5 / Table 1 (token-wise, channel-wise, mixing) on the layer-by-layer model",
    arms={f"layer, {h} head": {"model": "token_fusion_layer",
                               "model_kwargs": {**TF_SMALL, "patch_size": 8, "head": h}}
          for h in ("token", "channel", "mixing")},
    recipe=dict(epochs=5, batch_size=64, train_size=6400, val_size=2000, lr=1e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0),
))

register(Study(
    name="lkca-nearest", paper="lkca", data="nearest-color", img_size=32,
    question="On the long-range task (nearest-color), ViT vs ViT-LKCA at matched size and pooling",
    arms={"vit_1m (GAP)": {"model": "vit_1m", "model_kwargs": {"pool": "mean"}},
          "lkca_t (GAP)": {"model": "lkca_t"}},
    recipe=dict(epochs=10, batch_size=64, train_size=6000, val_size=1000, lr=1e-3, warmup_epochs=1.0,
                weight_decay=0.05, label_smoothing=0.1, data_seed=0),
))


# --------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------
def _machine() -> str:
    import torch

    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}")


def _smoke_study(study: Study) -> Study:
    s = copy.deepcopy(study)
    s.recipe.update(epochs=1, train_size=64, val_size=32, batch_size=16, max_steps_per_epoch=2)
    return s


def _save_atomic_json(obj: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)          # never a half-written results file


def run_one(study: Study, arm: str, seed: int, log: bool = False) -> dict:
    """Train one arm with one seed; return {"params", "final_val_acc", "best_val_acc", "history", "seconds"}."""
    from common.data import build_loaders
    from common.train import TrainConfig, build_model, fit, seed_everything

    spec = study.arms[arm]
    img_size = spec.get("img_size", study.img_size)
    recipe = {**study.recipe, **spec.get("cfg", {})}
    data_kw = {k: recipe.pop(k) for k in list(recipe) if k in DATA_KEYS}
    data_seed = data_kw.pop("data_seed", 0)
    batch_size = data_kw.pop("batch_size", 128)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(recipe) - fields
    if unknown:
        raise ValueError(f"study {study.name!r}, arm {arm!r}: unknown recipe fields {sorted(unknown)}; "
                         f"TrainConfig has {sorted(fields)}, the data takes {list(DATA_KEYS)}")
    train_loader, val_loader, num_classes = build_loaders(study.data, img_size=img_size,
                                                          batch_size=batch_size, seed=data_seed, **data_kw)
    seed_everything(seed)                                 # the run seed fixes the model's initialisation
    model = build_model(spec["model"], num_classes=num_classes, img_size=img_size,
                        **spec.get("model_kwargs", {}))
    params = sum(p.numel() for p in model.parameters())
    macs = _macs(model, img_size)
    cfg = TrainConfig(**{**dict(progress=False, log=log), **recipe, "seed": seed})
    t0 = time.time()
    history = fit(model, train_loader, val_loader, cfg)
    seconds = time.time() - t0
    key = "val_acc_ema" if "val_acc_ema" in history and recipe.get("ema") else "val_acc"
    return {"params": params, "macs": macs, "final_val_acc": history[key][-1], "best_val_acc": max(history[key]),
            "history": {k: v for k, v in history.items() if isinstance(v, list)}, "seconds": seconds}


def _macs(model, img_size: int) -> int:
    """Forward MACs per image (common.flops.count_macs: it runs the model in eval mode and restores the mode, so
    the count's forward pass leaves the BatchNorm statistics of the model about to be trained alone)."""
    import torch

    from common.flops import count_macs

    with torch.random.fork_rng():              # the count's random input must not move the run's RNG
        return int(count_macs(model, img_size)["total"])


def _header(study: Study) -> dict:
    # through JSON and back, so that a registered tuple compares equal to the list a results file holds
    head = {"study": study.name, "paper": study.paper, "data": study.data, "img_size": study.img_size,
            "question": study.question, "recipe": study.recipe,
            "arms": {a: {"model": s["model"], "model_kwargs": s.get("model_kwargs", {}), "cfg": s.get("cfg", {}),
                         **({"img_size": s["img_size"]} if "img_size" in s else {}),
                         "params": None, "seeds": [], "final_val_acc": [], "best_val_acc": [],
                         "histories": [], "seconds": []}
                     for a, s in study.arms.items()}}
    return json.loads(json.dumps(head))


def run_study(study: Study, seeds=(0, 1, 2), out: Optional[str] = None, log=print, verbose_runs=False) -> dict:
    """Run every (arm, seed) not yet in `out` (default results/<name>.json); save after each run."""
    out = out or os.path.join(RESULTS_DIR, f"{study.name}.json")
    results = _header(study)
    if os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        if any(old.get(k) != results[k] for k in ("recipe", "data", "img_size")):
            raise ValueError(f"{out} was made with another recipe/data ({old.get('data')}, {old.get('recipe')}); "
                             f"move it away or pass another out= path to start this study afresh")
        for a, r in old.get("arms", {}).items():
            if a in results["arms"]:
                new = results["arms"][a]
                if (r.get("model"), r.get("model_kwargs", {}), r.get("cfg", {}), r.get("img_size")) != (
                        new["model"], new["model_kwargs"], new["cfg"], new.get("img_size")):
                    raise ValueError(f"{out}: arm {a!r} was run with another model or options; start afresh")
                results["arms"][a] = r
    todo = [(a, s) for s in seeds for a in study.arms if s not in results["arms"][a]["seeds"]]
    if log:
        done = sum(len(r["seeds"]) for r in results["arms"].values())
        log(f"study {study.name}: {len(study.arms)} arms x seeds {list(seeds)}; {done} runs in {out}, "
            f"{len(todo)} to run")
    for i, (arm, seed) in enumerate(todo):
        r = run_one(study, arm, seed, log=verbose_runs)
        rec = results["arms"][arm]
        rec["params"], rec["macs"] = r["params"], r["macs"]
        rec["seeds"].append(seed)
        for k in ("final_val_acc", "best_val_acc", "seconds"):
            rec[k].append(r[k])
        rec["histories"].append(r["history"])
        results["machine"], results["date"] = _machine(), datetime.date.today().isoformat()
        _save_atomic_json(results, out)
        if log:
            log(f"  [{i + 1}/{len(todo)}] {arm:24s} seed {seed}: final val acc {100 * r['final_val_acc']:.2f}% "
                f"(best {100 * r['best_val_acc']:.2f}%) in {r['seconds']:.0f}s")
    return results


def load_results(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def complete(results: dict, arms, seeds) -> bool:
    return all(set(seeds) <= set(results["arms"].get(a, {}).get("seeds", [])) for a in arms)


def load_or_run(name: str, seeds=(0, 1, 2), smoke: bool = False, path: Optional[str] = None, log=print) -> dict:
    """Notebooks: the committed results/<name>.json if it holds every arm x seed, else train them.
    In smoke mode a tiny version of the study runs into a temporary file (on the embedded data if the study's
    dataset is not installed, as in CI), committed results are never touched, and the committed results
    (when complete) are what is returned, so the notebook's tables and plots are the real ones."""
    study = STUDIES[name]
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    if smoke:
        from common.data import DatasetNotFoundError

        tiny = _smoke_study(study)
        tmp = os.path.join(tempfile.mkdtemp(prefix="hvp-study-"), f"{name}-smoke.json")
        try:
            smoke_results = run_study(tiny, seeds=seeds[:2], out=tmp, log=log)
        except DatasetNotFoundError:          # CI has no Fashion-MNIST: exercise the same arms on embedded data
            tiny.data = "nearest-color"
            if log:
                log(f"smoke: {study.data} is not installed here; the tiny runs use nearest-color instead")
            smoke_results = run_study(tiny, seeds=seeds[:2], out=tmp, log=log)
        if os.path.exists(path) and complete(load_results(path), study.arms, seeds):
            if log:
                log(f"smoke: the tiny runs worked; showing the committed results of {path}")
            return load_results(path)
        return smoke_results
    if os.path.exists(path):
        results = load_results(path)
        if complete(results, study.arms, seeds):
            if log:
                log(f"loaded {path} (run on {results.get('date')}, {results.get('machine')})")
            return results
    return run_study(study, seeds=seeds, out=path, log=log)


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------
def summarize(results: dict, metric: str = "final_val_acc") -> str:
    """A table: each arm's params, mean +- std over seeds, then every pair's paired difference (95% CI)."""
    arms = {a: r for a, r in results["arms"].items() if r["seeds"]}
    lines = [f"study {results['study']} ({results['data']}, {results['img_size']} px): {metric}, "
             f"mean +- std over seeds", ""]
    width = max([len(a) for a in arms] + [4])
    lines.append(f"{'arm':{width}s}  {'params':>9s}  {'MACs/img':>9s}  seeds  {'mean':>7s}  {'std':>6s}  {'min':>6s}  "
                 f"{'max':>6s}  time/run")
    for a, r in arms.items():
        m, s = mean_std(r[metric])
        macs = f"{r['macs'] / 1e6:8.2f}M" if r.get("macs") else f"{'-':>9s}"
        lines.append(f"{a:{width}s}  {r['params'] / 1e6:8.3f}M  {macs}  {len(r['seeds']):5d}  {100 * m:6.2f}%  "
                     f"{100 * s:5.2f}  {100 * min(r[metric]):6.2f}  {100 * max(r[metric]):6.2f}  "
                     f"{mean_std(r['seconds'])[0]:6.0f}s")
    names = list(arms)
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    if pairs:
        lines += ["", "paired differences (same seeds), percentage points, 95% t-interval over seeds:"]
    for a, b in pairs:
        common_seeds = [s for s in arms[a]["seeds"] if s in arms[b]["seeds"]]
        if len(common_seeds) < 2:
            lines.append(f"  {a} - {b}: fewer than 2 common seeds")
            continue
        va = [arms[a][metric][arms[a]["seeds"].index(s)] for s in common_seeds]
        vb = [arms[b][metric][arms[b]["seeds"].index(s)] for s in common_seeds]
        m, lo, hi = paired_interval(va, vb)
        verdict = "no measurable difference" if lo <= 0 <= hi else ("higher" if m > 0 else "lower")
        lines.append(f"  {a} - {b}: {100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] "
                     f"(n={len(common_seeds)}): {verdict}")
    return "\n".join(lines)


def curves(results: dict, arm: str, key: str = "val_acc"):
    """(epochs, mean, std) of one history key over an arm's seeds."""
    hs = results["arms"][arm]["histories"]
    n = min(len(h[key]) for h in hs)
    cols = [[h[key][i] for h in hs] for i in range(n)]
    ms = [mean_std(c) for c in cols]
    return list(range(1, n + 1)), [m for m, _ in ms], [s for _, s in ms]


def plot_curves(results: dict, key: str = "val_acc", ax=None, title: Optional[str] = None):
    """Mean curve per arm with a +-1 std band over seeds."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for arm, r in results["arms"].items():
        if not r["seeds"]:
            continue
        x, m, s = curves(results, arm, key)
        line, = ax.plot(x, m, label=f"{arm} ({len(r['seeds'])} seeds)")
        ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(title or f"{results['study']}: {key} (mean +- std over seeds)")
    ax.legend(fontsize=8)
    return ax


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.study", description=__doc__.split("\n\n")[0])
    p.add_argument("study", nargs="?", help="a registered study (see --list)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="results file (default results/<study>.json)")
    p.add_argument("--list", action="store_true", help="list the registered studies")
    p.add_argument("--show", metavar="JSON", help="print the table of a results file and exit")
    p.add_argument("--smoke", action="store_true", help="a tiny version into a temporary file")
    p.add_argument("--verbose", action="store_true", help="print every epoch of every run")
    args = p.parse_args(argv)
    if args.show:
        if not os.path.exists(args.show):
            p.error(f"no results file {args.show!r}")
        print(summarize(load_results(args.show)))
        return 0
    if args.list or not args.study:
        for s in STUDIES.values():
            print(f"{s.name:24s} {s.paper:14s} {s.data:16s} {len(s.arms)} arms: {s.question}")
        return 0
    if args.study not in STUDIES:
        import difflib

        close = difflib.get_close_matches(args.study, STUDIES, n=3)
        p.error(f"unknown study {args.study!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                + f" Registered: {', '.join(STUDIES)}")
    if len(args.seeds) < 2:
        p.error("a study needs at least 2 seeds for an interval (3 or more recommended)")
    study = STUDIES[args.study]
    out = args.out
    if args.smoke:
        study = _smoke_study(study)
        out = out or os.path.join(tempfile.mkdtemp(prefix="hvp-study-"), f"{study.name}-smoke.json")
    results = run_study(study, seeds=args.seeds, out=out, verbose_runs=args.verbose)
    print()
    print(summarize(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

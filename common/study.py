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
     "arms": {name: {"model", "model_kwargs", "cfg", "params", "seeds": [...], "final_val_acc": [...],
                     "best_val_acc": [...], "histories": [...], "seconds": [...]}},
     "machine", "date"}

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
    ``{"model": name, "model_kwargs": {...}, "cfg": {...}}``; an arm's ``cfg`` overrides recipe fields only
    when that override *is* the question (e.g. HIRI-ViT's distillation alpha)."""

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
    recipe = {**study.recipe, **spec.get("cfg", {})}
    data_kw = {k: recipe.pop(k) for k in list(recipe) if k in DATA_KEYS}
    data_seed = data_kw.pop("data_seed", 0)
    batch_size = data_kw.pop("batch_size", 128)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(recipe) - fields
    if unknown:
        raise ValueError(f"study {study.name!r}, arm {arm!r}: unknown recipe fields {sorted(unknown)}; "
                         f"TrainConfig has {sorted(fields)}, the data takes {list(DATA_KEYS)}")
    train_loader, val_loader, num_classes = build_loaders(study.data, img_size=study.img_size,
                                                          batch_size=batch_size, seed=data_seed, **data_kw)
    seed_everything(seed)                                 # the run seed fixes the model's initialisation
    model = build_model(spec["model"], num_classes=num_classes, img_size=study.img_size,
                        **spec.get("model_kwargs", {}))
    params = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(**{**dict(progress=False, log=log), **recipe, "seed": seed})
    t0 = time.time()
    history = fit(model, train_loader, val_loader, cfg)
    seconds = time.time() - t0
    key = "val_acc_ema" if "val_acc_ema" in history and recipe.get("ema") else "val_acc"
    return {"params": params, "final_val_acc": history[key][-1], "best_val_acc": max(history[key]),
            "history": {k: v for k, v in history.items() if isinstance(v, list)}, "seconds": seconds}


def _header(study: Study) -> dict:
    return {"study": study.name, "paper": study.paper, "data": study.data, "img_size": study.img_size,
            "question": study.question, "recipe": study.recipe,
            "arms": {a: {"model": s["model"], "model_kwargs": s.get("model_kwargs", {}), "cfg": s.get("cfg", {}),
                         "params": None, "seeds": [], "final_val_acc": [], "best_val_acc": [],
                         "histories": [], "seconds": []}
                     for a, s in study.arms.items()}}


def run_study(study: Study, seeds=(0, 1, 2), out: Optional[str] = None, log=print, verbose_runs=False) -> dict:
    """Run every (arm, seed) not yet in `out` (default results/<name>.json); save after each run."""
    out = out or os.path.join(RESULTS_DIR, f"{study.name}.json")
    results = _header(study)
    if os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        if old.get("recipe") != study.recipe or old.get("data") != study.data or old.get("img_size") != study.img_size:
            raise ValueError(f"{out} was made with another recipe/data ({old.get('data')}, {old.get('recipe')}); "
                             f"move it away or pass another out= path to start this study afresh")
        for a, r in old.get("arms", {}).items():
            if a in results["arms"]:
                if (r.get("model"), r.get("model_kwargs", {}), r.get("cfg", {})) != (
                        results["arms"][a]["model"], results["arms"][a]["model_kwargs"], results["arms"][a]["cfg"]):
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
        rec["params"] = r["params"]
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
    lines.append(f"{'arm':{width}s}  {'params':>9s}  seeds  {'mean':>7s}  {'std':>6s}  {'min':>6s}  {'max':>6s}  "
                 f"time/run")
    for a, r in arms.items():
        m, s = mean_std(r[metric])
        lines.append(f"{a:{width}s}  {r['params'] / 1e6:8.3f}M  {len(r['seeds']):5d}  {100 * m:6.2f}%  "
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

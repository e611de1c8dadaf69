# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/hybrid-vision-papers/hybrid-vision-papers/blob/main/notebooks/convnext.ipynb)
#
# # ConvNeXt: a ConvNet for the 2020s
#
# *Liu, Mao, Wu, Feichtenhofer, Darrell, Xie, "A ConvNet for the 2020s"* (CVPR 2022, arXiv 2201.03545).
# Code: [`papers/convnext.py`](../papers/convnext.py) (one file, copy it anywhere).
#
# The paper starts from a ResNet-50 and applies, one at a time, what distinguishes a hierarchical vision
# Transformer (Swin) from it: the training recipe, a (3, 3, 9, 3) stage ratio, a "patchify" 4x4 stride-4 stem,
# depthwise convolutions, an inverted bottleneck, a **7x7** depthwise kernel moved to the top of the block,
# GELU, one LayerNorm per block instead of BatchNorms, and separate 2x2 stride-2 downsampling layers. The result
# is a pure ConvNet; its block is
# $$x \;\mapsto\; x + \mathrm{DropPath}\big(\gamma \odot W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}(\mathrm{DWConv}_{7\times7}(x)))\big),$$
# with $W_1: C\to4C$ and $W_2: 4C\to C$ applied to every pixel, and a learned per-channel layer scale $\gamma$
# initialised to $10^{-6}$.
#
# There is no attention in ConvNeXt, so there are no attention maps to show. What a unit "looks at" is measured
# by its **effective receptive field** (ERF): how much each input pixel moves the unit's output.
#
# This notebook: **draw** and **build** the block $\to$ **check** the parameter counts and MACs against the
# paper's table and the logits against timm $\to$ **measure** the ERF before and after a short training
# $\to$ **compare** the paper's 7x7 kernel with a 3x3 one on Fashion-MNIST over 3 seeds.

# %%
# Colab setup: clone the repository and install what Colab lacks; anywhere else this cell does nothing.
import os, sys, subprocess
HVP_REPO = "https://github.com/hybrid-vision-papers/hybrid-vision-papers"
if "google.colab" in sys.modules and not os.path.isdir("papers"):
    if not os.path.isdir("hybrid-vision-papers"):
        subprocess.run(["git", "clone", "--depth", "1", HVP_REPO], check=True)
    os.chdir("hybrid-vision-papers")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "einops"], check=True)
    import torch
    print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (Runtime > Change runtime type > GPU); the notebook runs on the CPU")

# %%
import os, sys, time
for p in ("..", "."):                                   # run from notebooks/ or from the repo root
    if os.path.isdir(os.path.join(p, "common")) and os.path.abspath(p) not in sys.path:
        sys.path.insert(0, os.path.abspath(p))
import torch
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
from common.smoke import SMOKE
from common.flops import count_params, count_macs
from common.data import build_loaders, find_fashion_mnist
from common.train import TrainConfig, fit, seed_everything
from common import study as S
from papers import convnext
from papers.convnext import (MODELS, CONFIGS, PARAMS, PAPER_PARAMS, PAPER_GFLOPS, PAPER_GFLOPS_384, Block,
                             ConvNeXt, convert_timm)

seed_everything(0)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print(f"torch {torch.__version__} | device {DEVICE} | SMOKE={SMOKE}")

# %% [markdown]
# ## 1. The block, drawn and built
#
# Left: the ConvNeXt block (the paper's Fig. 4) with the shape of the tensor after each layer. Right: the whole
# network: a patchify stem, four stages of blocks at $C, 2C, 4C, 8C$ channels and strides 4, 8, 16, 32, a
# LayerNorm + 2x2 stride-2 convolution between stages, then global average pooling, LayerNorm and a Linear head.

# %%
def box(ax, xy, text, color, w=3.2, h=0.62):
    ax.add_patch(FancyBboxPatch((xy[0] - w / 2, xy[1] - h / 2), w, h, boxstyle="round,pad=0.05",
                                fc=color, ec="k", lw=1))
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=9)

def arrow(ax, a, b):
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", lw=1.2))

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw=dict(width_ratios=[1.1, 1]))
layers = [("input x", "(B, C, H, W)", "white"),
          ("depthwise conv 7x7, pad 3\n(one 7x7 filter per channel)", "(B, C, H, W)", "#cfe2ff"),
          ("LayerNorm over C", "(B, H, W, C)", "#ffe5b4"),
          ("Linear C -> 4C  (1x1 conv)", "(B, H, W, 4C)", "#d4f4d4"),
          ("GELU", "(B, H, W, 4C)", "#f4d4f4"),
          ("Linear 4C -> C  (1x1 conv)", "(B, H, W, C)", "#d4f4d4"),
          ("layer scale: x gamma (init 1e-6)", "(B, H, W, C)", "#eeeeee"),
          ("drop path (train only)", "(B, C, H, W)", "#eeeeee")]
ys = [9 - 1.05 * i for i in range(len(layers))] + [9 - 1.05 * len(layers)]
for (t, shape, c), y in zip(layers, ys):
    box(ax, (2, y), t, c)
    ax.text(3.8, y, shape, va="center", fontsize=8, family="monospace")
for y0, y1 in zip(ys[:-1], ys[1:]):
    arrow(ax, (2, y0 - 0.33), (2, y1 + 0.33))
ax.text(2, ys[-1], "+", ha="center", va="center", fontsize=18,
        bbox=dict(boxstyle="circle", fc="white", ec="k"))
ax.annotate("", xy=(2.25, ys[-1]), xytext=(0.35, ys[0]),
            arrowprops=dict(arrowstyle="->", lw=1.2, connectionstyle="angle,angleA=-90,angleB=180,rad=0", ls="--"))
ax.text(0.2, (ys[0] + ys[-1]) / 2, "identity shortcut", rotation=90, va="center", fontsize=8)
ax.set_xlim(-0.2, 5.6); ax.set_ylim(ys[-1] - 0.8, ys[0] + 0.8); ax.axis("off")
ax.set_title("ConvNeXt block (Fig. 4)")

stages = [("image", "(B, 3, 224, 224)", "white"),
          ("stem: conv 4x4 / 4, LN", "(B, C, 56, 56)", "#cfe2ff"),
          ("stage 1: n1 blocks", "(B, C, 56, 56)", "#d4f4d4"),
          ("LN, conv 2x2 / 2", "(B, 2C, 28, 28)", "#cfe2ff"),
          ("stage 2: n2 blocks", "(B, 2C, 28, 28)", "#d4f4d4"),
          ("LN, conv 2x2 / 2", "(B, 4C, 14, 14)", "#cfe2ff"),
          ("stage 3: n3 blocks", "(B, 4C, 14, 14)", "#d4f4d4"),
          ("LN, conv 2x2 / 2", "(B, 8C, 7, 7)", "#cfe2ff"),
          ("stage 4: n4 blocks", "(B, 8C, 7, 7)", "#d4f4d4"),
          ("avg pool, LN, Linear", "(B, classes)", "#ffe5b4")]
ys2 = [9.3 - 1.02 * i for i in range(len(stages))]
for (t, shape, c), y in zip(stages, ys2):
    box(ax2, (1.8, y), t, c, w=3.0, h=0.55)
    ax2.text(3.5, y, shape, va="center", fontsize=8, family="monospace")
for y0, y1 in zip(ys2[:-1], ys2[1:]):
    arrow(ax2, (1.8, y0 - 0.3), (1.8, y1 + 0.3))
ax2.set_xlim(0, 5.6); ax2.set_ylim(ys2[-1] - 0.6, ys2[0] + 0.6); ax2.axis("off")
ax2.set_title("ConvNeXt-T: C = 96, (n1, n2, n3, n4) = (3, 3, 9, 3)")
plt.tight_layout(); plt.show(); plt.close(fig)

# %% [markdown]
# Built: one block at $C=96$ (ConvNeXt-T's first stage). The depthwise convolution is a plain `nn.Conv2d` with
# `groups=C`; the two 1x1 convolutions are `nn.Linear` layers on the channels-last tensor (the authors' choice,
# and their checkpoints' layout). Its $8C^2 + 58C$ parameters: $49C + C$ (depthwise + bias), $2C$ (LN),
# $4C^2 + 4C$ and $4C^2 + C$ (the two Linears), $C$ ($\gamma$). Then the block restated literally (explicit
# 7x7 sums, LayerNorm by hand, exact GELU) against the module, in both of the authors' equivalent layouts.

# %%
blk = Block(96)
print(blk)
print(f"parameters: {count_params(blk):,} = 8C^2 + 58C = {8 * 96 ** 2 + 58 * 96:,}")
x = torch.randn(2, 96, 56, 56)
print("input", tuple(x.shape), "-> output", tuple(blk(x).shape))

torch.manual_seed(0)
b = Block(6).double()
with torch.no_grad():
    for p in b.parameters():
        p.normal_(0, 0.3)
xs = torch.randn(2, 6, 9, 9, dtype=torch.float64)
xp = torch.nn.functional.pad(xs, (3, 3, 3, 3))
dw = sum(b.dwconv.weight[:, 0, i, j, None, None] * xp[:, :, i:i + 9, j:j + 9] for i in range(7) for j in range(7))
dw = dw + b.dwconv.bias[:, None, None]
ln = (dw - dw.mean(1, keepdim=True)) / (dw.var(1, unbiased=False, keepdim=True) + 1e-6).sqrt()
ln = ln * b.norm.weight[:, None, None] + b.norm.bias[:, None, None]
h = torch.einsum("oc,bchw->bohw", b.pwconv1.weight, ln) + b.pwconv1.bias[:, None, None]
h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))
ref = xs + b.gamma[:, None, None] * (torch.einsum("oc,bchw->bohw", b.pwconv2.weight, h) + b.pwconv2.bias[:, None, None])
for layout in ("channels_last", "channels_first"):
    b.layout = layout
    print(f"layout {layout:14s}: max |module - formula| = {(b(xs) - ref).abs().max():.1e} (float64)")

# %% [markdown]
# ## 2. Check: parameter counts and MACs against the paper's table
#
# Every variant built on the `meta` device (no memory, no initialisation: XL's 350M parameters count in a
# second). MACs: `common.flops.count_macs` (every convolution and matmul that runs; the paper's "FLOPs" are
# multiply-accumulates). The paper prints parameters in whole millions and FLOPs to 0.1G; atto..nano are timm's
# small configs (same block, not in the paper).

# %%
print(f"{'variant':16s}{'params':>14s}{'paper':>7s} | {'GMACs 224':>10s}{'paper':>7s} | {'GMACs 384':>10s}{'paper':>7s}")
for name, f in MODELS.items():
    with torch.device("meta"):
        m = f()
    n = count_params(m)
    assert n == PARAMS[name]
    g224 = count_macs(m, 224)["total"] / 1e9
    g384 = count_macs(m, 384)["total"] / 1e9 if name in PAPER_GFLOPS_384 else float("nan")
    pp = f"{PAPER_PARAMS[name] / 1e6:5.0f}M" if name in PAPER_PARAMS else "     -"
    pg = f"{PAPER_GFLOPS[name]:6.1f}G" if name in PAPER_GFLOPS else "      -"
    pg384 = f"{PAPER_GFLOPS_384[name]:6.1f}G" if name in PAPER_GFLOPS_384 else "      -"
    print(f"{name:16s}{n:14,d}{pp:>7s} | {g224:10.4f}{pg:>7s} | {g384:10.4f}{pg384:>7s}")

# %% [markdown]
# Every count at 224 px rounds to the paper's printed value, and so do the 384 px ones except ConvNeXt-B
# (45.12 against Table 1's 45.0; the authors' README prints 47.0 for the same model in its ImageNet-22K table).
# T has 28.59M parameters, which Table 1 prints as 28M (the README's 22K table: 29M). The parameter counts are
# also equal to timm's `convnext_*` exactly (asserted in `tests/test_convnext.py`).
#
# ## 3. Check: the same function as timm's ConvNeXt
#
# timm re-implements ConvNeXt under other key names (`stem.0`, `stages.1.downsample.1`,
# `stages.0.blocks.0.mlp.fc1`, `head.fc`, ...) and, for atto..nano, with 1x1 convolutions instead of Linears.
# `convert_timm` maps its state_dict to this file's names (which are the authors' checkpoint names). Here timm's
# models get random weights (no download; every parameter perturbed, including $\gamma$, so that the blocks
# matter), are converted and loaded with `strict=True`, and both models see the same images.

# %%
import timm

def perturbed_timm(name, seed=0):
    tm = timm.create_model(name, pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in tm.named_parameters():
            base = 0.5 if k.endswith("gamma") else (1.0 if p.ndim == 1 and k.endswith("weight") else 0.0)
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return tm

checks = [("convnext_atto", 224), ("convnext_tiny", 64)] if SMOKE else \
         [("convnext_atto", 224), ("convnext_femto", 64), ("convnext_nano", 64), ("convnext_tiny", 64),
          ("convnext_small", 32)]
tm = perturbed_timm("convnext_atto")
print("a few key names, timm -> ours:")
for k in ["stem.0.weight", "stages.1.downsample.0.weight", "stages.0.blocks.0.mlp.fc1.weight", "head.fc.weight"]:
    (nk, nv), = convert_timm({k: tm.state_dict()[k]}).items()
    print(f"  {k:34s} {str(tuple(tm.state_dict()[k].shape)):16s} -> {nk:30s} {tuple(nv.shape)}")
for name, size in checks:
    tm = perturbed_timm(name)
    ours = MODELS[name]().eval()
    ours.load_state_dict(convert_timm(tm.state_dict()), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = ours(x), tm(x)
    print(f"{name:16s} at {size:3d} px: max |ours - timm| = {(a - b).abs().max():.1e}  (logits up to {b.abs().max():.1f})")

# %% [markdown]
# ## 4. The effective receptive field, before and after training
#
# The theoretical receptive field of a unit in stage $i$ grows by $6\cdot$stride pixels per 7x7 block; the
# *effective* one (Luo et al. 2016; RepLKNet's and UniRepLKNet's ERF figures) is where the gradient actually
# goes: $\mathrm{ERF}(u,v) = \mathbb E_{x}\sum_c \big|\partial y_{\text{centre}} / \partial x_{c,u,v}\big|$,
# with $y_{\text{centre}}$ the sum over channels of the centre pixel of a stage's output map, averaged over
# real images. The function below works for any model with a `forward_stages` method (or any callable that
# returns a feature map). The summary number: the side of the smallest centred square holding 50% / 90% of
# the ERF's total, as a fraction of the image side.
#
# Three models, all ConvNeXt-atto at 32 px on Fashion-MNIST images: **untrained** (layer scale
# $\gamma = 10^{-6}$, as the paper initialises it), **untrained with $\gamma = 1$** (what the random 7x7 kernels
# alone would spread), and **trained** for 3 epochs on 10,000 Fashion-MNIST images (295 s in the committed run, on a busy machine).

# %%
def effective_receptive_field(features, images, batch_size=64):
    """ERF map (H, W): mean over `images` of sum_c |d y / d x[c]|, y = the sum over channels of the centre pixel
    of `features(x)` (a (B, C, h, w) map). Eval mode is the caller's job; gradients w.r.t. the input only."""
    total = torch.zeros(images.shape[-2:])
    for xb in images.split(batch_size):
        xb = xb.clone().requires_grad_(True)
        f = features(xb)                                        # (B, C, h, w)
        f[:, :, f.shape[-2] // 2, f.shape[-1] // 2].sum().backward()   # images are independent in eval mode
        total += xb.grad.abs().sum(1).sum(0)                    # (H, W)
    return total / len(images)


def centred_square_fraction(erf, t):
    """Side of the smallest centred square holding a fraction t of the ERF's total, / the image side."""
    H, W = erf.shape
    cy, cx, total = H // 2, W // 2, erf.sum()
    for r in range(1, max(H, W) + 1):
        if erf[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r].sum() >= t * total:
            return min(2 * r, H) / H
    return 1.0

# %% [markdown]
# The data for this section and the next: Fashion-MNIST (real 28x28 photos of clothes, 10 classes; they reach
# the model as 3x32x32, `common/data.py`). The training run for the ERF uses the same recipe as the 3-seed
# study in section 5 (seed 0, the paper's 7x7 kernel): 3 epochs over 10,000 training images, AdamW, lr 1e-3.

# %%
RECIPE = dict(epochs=3, batch_size=128, train_size=10000, val_size=5000, lr=1e-3, warmup_epochs=0.5,
              weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0)
data_kw = dict(train_size=64, val_size=64) if SMOKE else dict(train_size=RECIPE["train_size"], val_size=RECIPE["val_size"])
FASHION = "fashion-mnist"
if SMOKE and find_fashion_mnist("data") is None:   # CI has no Fashion-MNIST: its smoke steps use the embedded task
    FASHION = "nearest-color"
    print("smoke: Fashion-MNIST is not installed here; these smoke steps run on nearest-color instead")
train_loader, val_loader, n_cls = build_loaders(FASHION, img_size=32, batch_size=RECIPE["batch_size"],
                                                augment="basic", seed=0, **data_kw)
print(f"{FASHION}: {len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, {n_cls} classes")
erf_images = torch.cat([xb for xb, _ in val_loader])[: 64 if SMOKE else 512]

seed_everything(0)
trained = MODELS["convnext_atto"](num_classes=n_cls, img_size=32)
cfg_kw = {k: v for k, v in RECIPE.items() if k not in ("batch_size", "train_size", "val_size", "augment", "data_seed")}
cfg_kw.update(dict(epochs=1, max_steps_per_epoch=2) if SMOKE else {})
cfg = TrainConfig(**cfg_kw, device=DEVICE, progress=False, seed=0)
t0 = time.time()
hist = fit(trained, train_loader, val_loader, cfg)
print(f"trained convnext_atto: val acc {100 * hist['val_acc'][-1]:.1f}% after {time.time() - t0:.0f}s")
g = torch.cat([m.gamma.detach().abs().flatten() for m in trained.modules() if isinstance(m, Block)])
print(f"layer scale |gamma| after training: median {g.median():.3f}, max {g.max():.3f} (initialised to 1e-6)")

# %%
seed_everything(0)
models = {"untrained (gamma = 1e-6)": MODELS["convnext_atto"](num_classes=n_cls, img_size=32),
          "untrained, gamma = 1": MODELS["convnext_atto"](num_classes=n_cls, img_size=32, layer_scale_init_value=1.0),
          "trained ~1 min": trained}
erfs = {}
for name, m in models.items():
    m = m.cpu().eval()
    for stage in (0, 1):
        erfs[name, stage] = effective_receptive_field(lambda x, m=m, s=stage: m.forward_stages(x)[s], erf_images)

fig, ax = plt.subplots(2, 3, figsize=(11, 7.2))
for j, name in enumerate(models):
    for stage in (0, 1):
        e = erfs[name, stage]
        a = ax[stage, j]
        a.imshow(e / e.max(), cmap="magma", vmin=0, vmax=1)
        a.set_title(f"{name}\nstage {stage + 1} (stride {4 * 2 ** stage}): 50% in {100 * centred_square_fraction(e, .5):.0f}%, "
                    f"90% in {100 * centred_square_fraction(e, .9):.0f}%", fontsize=8)
        a.set_xticks([]); a.set_yticks([])
plt.suptitle("effective receptive field of the centre unit (32x32 input; side of the centred square holding 50% / 90%)",
             fontsize=9)
plt.tight_layout(); plt.show(); plt.close(fig)
for (name, stage), e in erfs.items():
    print(f"{name:26s} stage {stage + 1}: 50% of the ERF in a centred square of side {100 * centred_square_fraction(e, .5):3.0f}%"
          f" of the image, 90% in {100 * centred_square_fraction(e, .9):3.0f}%")

# %% [markdown]
# ## 5. Does the 7x7 kernel matter here? ConvNeXt-atto with 7x7 vs 3x3 depthwise kernels, 3 seeds
#
# The paper's §2.5 ablation (ImageNet, 300 epochs): going from 3x3 to 7x7 raised ConvNeXt-T's accuracy
# from 79.9% to 80.6% and saturated there. The question in miniature: on Fashion-MNIST at 32 px (stage maps
# 8, 4, 2, 1 pixels, so a 7x7 kernel already covers every map after the first stage), 27-38 s per run on an idle 2-core CPU (the table's longer times were measured while other jobs ran),
# 3 seeds per arm, paired by seed (`common/study.py`: same data order per seed). A difference whose 95%
# interval contains 0 is "no measurable difference at this scale".

# %%
STUDY = S.register(S.Study(
    name="convnext-fashion", paper="convnext", data="fashion-mnist", img_size=32,
    question="Does ConvNeXt's 7x7 depthwise kernel beat a 3x3 one on a small real dataset at 32 px? (the "
             "paper's §2.5 ablation in miniature)",
    arms={"atto 7x7 (paper)": {"model": "convnext_atto"},
          "atto 3x3": {"model": "convnext_atto", "model_kwargs": {"kernel_size": 3}}},
    recipe=RECIPE))
results = S.load_or_run("convnext-fashion", seeds=(0, 1, 2), smoke=SMOKE)
print(S.summarize(results))
fig, ax = plt.subplots(figsize=(6.5, 3.6))
S.plot_curves(results, "val_acc", ax=ax, title="Fashion-MNIST val accuracy, mean +- std over seeds")
plt.tight_layout(); plt.show(); plt.close(fig)

# %% [markdown]
# ## What to take away
#
# * The file reproduces the paper's five models exactly as the authors' code builds them: parameter counts equal
#   to timm's (28,589,128 for T), MACs that round to every 224 px value in Table 1 (section 2), and logits equal
#   to timm's after `convert_timm` to float32 rounding (section 3). The authors' `.pth` files load with
#   `strict=True` because the key names are theirs.
# * The ConvNeXt block is a Transformer block whose attention is replaced by one 7x7 depthwise convolution:
#   LN, a 4x MLP and a residual, with a layer scale starting at $10^{-6}$.
# * ERF (section 4, one network each, one seed): at initialisation $\gamma = 10^{-6}$ makes every block an
#   identity to six digits, so the untrained network's ERF is mostly the stem's and the downsampling layers'
#   footprint: 90% of stage 2's ERF lies in a centred square of 50% of the image side. With $\gamma = 1$ the same
#   untrained network spreads it to 88%. After 3 epochs of Fashion-MNIST (the run labelled "trained ~1 min"
#   took 295 s on a busy machine; $\gamma$ grew to a median of 0.024) it reached 69%: training grows $\gamma$
#   and the 7x7 kernels start to spread the gradient.
# * The 7x7 vs 3x3 study (section 5): 3 seeds per arm, 10,000 images, 3 epochs (237 steps), 32 px. 7x7 reached
#   73.39 +- 0.63%, 3x3 74.43 +- 0.42%; the paired difference 7x7 - 3x3 is -1.03 points, 95% interval
#   [-1.58, -0.48]. At this scale the 3x3 kernel was measurably *better*. Both arms were still improving at the
#   end (about 74%, where small ConvNets reach ~90% on Fashion-MNIST with longer training), so this compares
#   early training on tiny images (the 7x7 kernel already covers the whole 4x4 / 2x2 / 1x1 maps of stages 2-4);
#   it does not contradict the paper's ImageNet ablation (3x3 79.9% -> 7x7 80.6%, 300 epochs at 224 px).

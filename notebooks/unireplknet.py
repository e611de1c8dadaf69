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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/hybrid-vision-papers/hybrid-vision-papers/blob/main/notebooks/unireplknet.ipynb)
#
# # UniRepLKNet: large kernels trained as a sum of dilated small ones
#
# *Ding et al., "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud,
# Time-Series and Image Recognition"* (CVPR 2024, arXiv 2311.15599). Code:
# [`papers/unireplknet.py`](../papers/unireplknet.py) (one file, copy it anywhere).
#
# UniRepLKNet puts a **13x13 depthwise convolution** in most of its blocks: a few large kernels "see wide
# without going deep". During training each large kernel gets help: the **Dilated Reparam Block** adds, in
# parallel, small depthwise convolutions *with dilation* (5x5, 7x7 at dilation 2, 3x3 at dilations 3, 4, 5),
# each with its own BatchNorm. Everything in that block is linear at inference time, so after training it
# collapses into **one** 13x13 kernel: the deployed network pays nothing for the extra branches.
#
# This notebook: **draw** the block and where each branch's taps fall $\to$ **build** every variant and check
# the parameter counts against the paper $\to$ **re-parameterise** step by step, verifying each step $\to$
# compare **effective receptive fields** of UniRepLKNet, ConvNeXt, LKCA and iiANET, untrained and after a short
# training $\to$ a small **3-seed study** on Fashion-MNIST.

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
import torch.nn.functional as F
from torch import nn
import matplotlib.pyplot as plt
from common.smoke import SMOKE
from common.flops import count_params
from common.data import build_loaders, find_fashion_mnist
from common.train import TrainConfig, fit, seed_everything
from common import study as S
from papers import unireplknet as U, convnext, lkca, iianet
from papers.unireplknet import (BRANCHES, MODELS, PAPER_PARAMS, TRAIN_PARAMS, DEPLOY_PARAMS, DilatedReparamBlock,
                                UniRepLKNetBlock)

seed_everything(0)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print(f"torch {torch.__version__} | device {DEVICE} | SMOKE={SMOKE} | threads {torch.get_num_threads()}")

# %% [markdown]
# ## 1. The block
#
# A **LarK Block** (kernel 13) and a **SmaK Block** (kernel 3) differ only in their depthwise conv:
#
# $$y = \mathrm{BN}\big(\mathrm{Linear}_{4C\to C}(\mathrm{GRN}(\mathrm{GELU}(\mathrm{Linear}_{C\to 4C}(
#   \mathrm{SE}(\mathrm{BN}(\mathrm{DW}(x))))))\big),\qquad \mathrm{out} = x + \gamma \odot y$$
#
# with $\mathrm{DW}$ the **Dilated Reparam Block** for $K=13$:
# $$\mathrm{DW}(x) = \mathrm{BN}_0(W_{13\times13} * x) + \sum_{(k,r)} \mathrm{BN}_{k,r}(W_{k\times k} *_r x),
# \quad (k,r) \in \{(5,1),(7,2),(3,3),(3,4),(3,5)\}$$
# ($*_r$ = convolution with dilation $r$). SE is a squeeze-and-excitation gate (reduction 4), GRN the global
# response normalisation of ConvNeXt V2, $\gamma$ a layer scale initialised to $10^{-6}$.
#
# Where does each branch look? A $k\times k$ kernel at dilation $r$ has taps $r$ pixels apart and spans
# $r(k-1)+1$ pixels. Below, each branch's taps inside the 13x13 window (all centred on the same pixel):

# %%
K = 13
fig, axes = plt.subplots(1, len(BRANCHES[K]) + 1, figsize=(15, 2.8))
panels = [(K, 1)] + list(BRANCHES[K])
for ax, (k, r) in zip(axes, panels):
    span = r * (k - 1) + 1
    grid = U.pad_kernel(U.dilate_kernel(torch.ones(1, 1, k, k), r), K)[0, 0]      # (13, 13) 1 at every tap
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_title(f"{k}x{k}, r={r}\nspans {span}x{span}, {k * k} taps", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
plt.suptitle("Dilated Reparam Block (K=13): taps of each branch inside the 13x13 window", y=1.05)
plt.show(); plt.close(fig)
print(UniRepLKNetBlock(32, 13))

# %% [markdown]
# The block above is built from the file. Its submodule names are the authors' checkpoint keys
# (`dwconv.lk_origin`, `dwconv.dil_conv_k7_2`, `se.down`, `pwconv1.1`, `act.1.gamma`, `pwconv2.2`, `gamma`, ...),
# so the released ImageNet checkpoints load with `load_state_dict(strict=True)` (tested on the key names and
# shapes; nothing is downloaded here).
#
# ## 2. The variants and their parameter counts
#
# The paper reports the **deploy** form (after re-parameterisation). Each variant is built twice on the meta
# device (no memory, no initialisation): the training form and `deploy=True`.

# %%
print(f"{'variant':15s} {'depths':12s} {'dims':20s} {'train form':>12s} {'deploy form':>12s} {'paper':>7s}")
for name, factory in MODELS.items():
    with torch.device("meta"):
        m = factory(num_classes=1000)
        train, deploy = count_params(m), count_params(factory(num_classes=1000, deploy=True))
    assert (train, deploy) == (TRAIN_PARAMS[name], DEPLOY_PARAMS[name])
    print(f"{name:15s} {str(m.depths):12s} {str(m.dims):20s} {train:12,d} {deploy:12,d} "
          f"{PAPER_PARAMS[name] / 1e6:6.1f}M")

# %% [markdown]
# Every deploy count rounds to the paper's figure, except XL: 386.53M is printed as 386M (truncated; S's
# 55.65M is rounded up to 56M). A..S also equal the counts measured by building the authors' code (train and
# deploy form), which `tests/test_unireplknet.py` asserts.
#
# Stage by stage at 224 px (UniRepLKNet-A): a stride-4 stem, then stride 2 per stage, ending at 7x7.

# %%
with torch.device("meta"):
    m = U.unireplknet_a()
    x = torch.empty(1, 3, 224, 224)
    for i, (down, stage) in enumerate(zip(m.downsample_layers, m.stages)):
        x = stage(down(x))
        print(f"stage {i + 1}: {tuple(x.shape)}  kernels {m.kernel_sizes[i]}")

# %% [markdown]
# ## 3. Re-parameterisation, step by step
#
# **Step 1: fold BN into its conv.** In eval mode BN is an affine map per channel,
# $\mathrm{BN}(z) = \gamma\,(z-\mu)/\sigma + \beta$ with $\sigma = \sqrt{\mathrm{var}+\epsilon}$, so
# $$\mathrm{BN}(W * x + b) = \underbrace{\tfrac{\gamma}{\sigma} W}_{W'} * x + \underbrace{\beta + (b-\mu)\tfrac{\gamma}{\sigma}}_{b'} .$$
#
# **Step 2: a dilated kernel is a dense kernel with holes** (the paper's Eq. 1):
# $W' = \mathrm{conv\_transpose2d}(W, I, \mathrm{stride}=r)$, $I$ the $1\times1$ kernel $[1]$: a $k\times k$
# kernel at dilation $r$ becomes the $(r(k-1)+1)^2$ kernel with the taps at every $r$-th position.
#
# **Step 3: pad and add.** Convolution is linear in the kernel and, with "same" padding, a kernel zero-padded
# around its centre computes the same output, so all branches sum into one $13\times13$ kernel (and their
# biases add).
#
# Each step on its own, against an independent computation (float64):

# %%
torch.manual_seed(0)
C = 4
x = torch.randn(2, C, 20, 20, dtype=torch.float64)

# Step 1: conv -> BN(eval) vs one conv with folded weights
conv = nn.Conv2d(C, C, 5, padding=2, groups=C, bias=False).double()
bn = nn.BatchNorm2d(C).double().eval()
with torch.no_grad():
    bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2); bn.weight.uniform_(0.5, 1.5); bn.bias.uniform_(-1, 1)
w1, b1 = U.fuse_bn(conv.weight, None, bn)
d1 = (F.conv2d(x, w1, b1, padding=2, groups=C) - bn(conv(x))).abs().max()
print(f"step 1, BN folded into the conv:            max |difference| = {d1:.1e}")

# Step 2: 3x3 at dilation 3 == dense 7x7 with zeros (Eq. 1), against F.conv2d(dilation=3)
w = torch.randn(C, 1, 3, 3, dtype=torch.float64)
dense = U.dilate_kernel(w, 3)
d2 = (F.conv2d(x, dense, padding=3, groups=C) - F.conv2d(x, w, padding=3, dilation=3, groups=C)).abs().max()
print(f"step 2, 3x3 r=3 == dense {tuple(dense.shape[-2:])} kernel:       max |difference| = {d2:.1e}")

# Step 3: pad the 7x7 to 13x13: same output with padding 6
d3 = (F.conv2d(x, U.pad_kernel(dense, 13), padding=6, groups=C) - F.conv2d(x, dense, padding=3, groups=C)).abs().max()
print(f"step 3, 7x7 centred in 13x13:                max |difference| = {d3:.1e}")

fig, ax = plt.subplots(1, 3, figsize=(9, 3))
for a, (t, title) in zip(ax, [(w[0, 0], "3x3 kernel (r=3)"), (dense[0, 0], "Eq. 1: dense 7x7"),
                              (U.pad_kernel(dense, 13)[0, 0], "padded to 13x13")]):
    a.imshow(t, cmap="coolwarm", vmin=-2, vmax=2); a.set_title(title); a.set_xticks([]); a.set_yticks([])
plt.show(); plt.close(fig)

# %% [markdown]
# Now a whole Dilated Reparam Block with random BN statistics: each branch folded and made dense, then the
# sum. The six panels are the branch kernels (channel 0) after steps 1-3; the last one is their sum, the
# single 13x13 kernel the deployed network uses.

# %%
torch.manual_seed(1)
drb = DilatedReparamBlock(C, 13).double()
with torch.no_grad():
    for mod in drb.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1); mod.running_var.uniform_(0.5, 2)
            mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-1, 1)
        elif isinstance(mod, nn.Conv2d):
            mod.weight.normal_()
drb.eval()
parts = [U.pad_kernel(U.fuse_bn(drb.lk_origin.weight, None, drb.origin_bn)[0], 13)]
for k, r in drb.branches:
    wk = U.fuse_bn(getattr(drb, f"dil_conv_k{k}_{r}").weight, None, getattr(drb, f"dil_bn_k{k}_{r}"))[0]
    parts.append(U.pad_kernel(U.dilate_kernel(wk, r), 13))
merged_w, merged_b = drb.merged_kernel()
with torch.no_grad():
    ref = drb(x)
    drb.merge_dilated_branches()
    d = (drb(x) - ref).abs().max() / ref.abs().max()
print(f"Dilated Reparam Block -> one 13x13 conv: max relative difference {d:.1e}; "
      f"modules left: {[n for n, _ in drb.named_children()]}")
fig, ax = plt.subplots(1, 7, figsize=(17, 2.8))
titles = ["13x13 (folded)"] + [f"{k}x{k} r={r}" for k, r in drb.branches] + ["sum = deploy kernel"]
for a, t, title in zip(ax, parts + [merged_w], titles):
    a.imshow(t[0, 0].detach(), cmap="coolwarm", vmin=-3, vmax=3); a.set_title(title, fontsize=9)
    a.set_xticks([]); a.set_yticks([])
plt.show(); plt.close(fig)
print("sum of the panels equals the merged kernel:", torch.allclose(sum(parts), merged_w))

# %% [markdown]
# **Step 4: the rest of the block.** The BN after the depthwise conv folds into it (step 1 again). After the
# MLP, with $g$ = GRN without its bias $\beta_g$, the second Linear $W$, its BN and the layer scale $s$:
# $$s\odot\mathrm{BN}\big(W(g+\beta_g)\big) = \underbrace{\big(s\,\tfrac{\gamma}{\sigma}\big)\odot W}_{W'}\,g
#   + \underbrace{s\odot\big(\beta + (W\beta_g-\mu)\tfrac{\gamma}{\sigma}\big)}_{b'} ,$$
# so the deployed block has no BN, no GRN bias and no layer scale. `model.reparameterize()` does all of it.
#
# **The whole model**: UniRepLKNet-A with random BN statistics, GRN parameters and layer scales (so nothing is
# trivially 0 or 1), eval mode, float64 and float32. The converted state_dict has exactly the keys of a
# model built with `deploy=True` and loads into it.

# %%
def randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.6 - 0.3)
            elif isinstance(mod, U.GRN):
                mod.gamma.copy_(torch.rand(mod.gamma.shape, generator=g) - 0.5)
                mod.beta.copy_(torch.rand(mod.beta.shape, generator=g) * 0.6 - 0.3)
            elif isinstance(mod, UniRepLKNetBlock):
                mod.gamma.copy_(torch.rand(mod.gamma.shape, generator=g) + 0.5)
    return model

for dtype in (torch.float64, torch.float32):
    torch.manual_seed(0)
    model = randomise(U.unireplknet_a(num_classes=10)).to(dtype).eval()
    xb = torch.randn(4, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        y_train = model(xb)
        n_train = count_params(model)
        model.reparameterize()
        y_deploy = model(xb)
    err = float((y_deploy - y_train).abs().max() / y_train.abs().max())
    print(f"{str(dtype):14s}: params {n_train:,} -> {count_params(model):,}; deploy vs train max relative "
          f"error {err:.1e}")
fresh = U.unireplknet_a(num_classes=10, deploy=True).double().eval()
fresh.load_state_dict(model.double().state_dict(), strict=True)
print("converted state_dict loads strictly into unireplknet_a(deploy=True):",
      torch.equal(fresh(xb.double()), model(xb.double())))

# %% [markdown]
# How much does the conversion save at inference? Forward time of UniRepLKNet-A, train form (eval mode) vs
# deploy form, on this machine (best of 5):

# %%
def best_time(model, x, reps=5):
    ts = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t0 = time.perf_counter(); model(x); ts.append(time.perf_counter() - t0)
    return min(ts[1:])

size, batch = (64, 2) if SMOKE else (224, 8)
xb = torch.randn(batch, 3, size, size, device=DEVICE)
m_train = U.unireplknet_a(num_classes=1000).to(DEVICE).eval()
t_train = best_time(m_train, xb)
t_deploy = best_time(m_train.reparameterize(), xb)
print(f"UniRepLKNet-A, batch {batch} at {size} px on {DEVICE}: train form {1e3 * t_train:.0f} ms, "
      f"deploy form {1e3 * t_deploy:.0f} ms ({t_train / t_deploy:.1f}x)")
del m_train

# %% [markdown]
# ## 4. Effective receptive fields
#
# The *theoretical* receptive field of a deep network is large; the *effective* one (Luo et al. 2016; used by
# RepLKNet and UniRepLKNet to argue for large kernels) is where the output actually depends on the input:
# the gradient of a centre output unit with respect to the input pixels, $|\partial y_{\mathrm{centre}} /
# \partial x|$ summed over colour channels, normalised per image and averaged over images. Output unit = the
# last feature map's unit(s) nearest the image centre (the single unit of a 1x1 map, the central 2x2 of an
# even map), ReLU, summed over channels (as in RepLKNet's ERF code). We compare four small models at 32 px, one per family: UniRepLKNet (13x13 kernels with dilated
# branches), ConvNeXt (7x7 kernels), LKCA (a global learned kernel over 8x8 tokens) and iiANET (dilated conv +
# MBConv + global attention), **untrained and after a short training** (one seed each: an anecdote).
#
# A number per map: the share of the image (in %) covered by the pixels that hold 50% / 90% of the gradient
# mass (small = concentrated near the centre, 100% would be perfectly uniform).

# %%
IMG = 32
DIMS = (16, 32, 64, 128)                                            # CPU-sized widths, the real layouts

def make_models():
    seed_everything(0)
    return {
        "UniRepLKNet (A layout)": U.unireplknet_a(num_classes=10, img_size=IMG, dims=DIMS),
        "ConvNeXt (atto layout)": convnext.convnext_atto(num_classes=10, img_size=IMG, dims=DIMS),
        "LKCA-T": lkca.lkca_t(num_classes=10, img_size=IMG),
        "iiANET (x0.25 width)": iianet.iianet(num_classes=10, img_size=IMG, width_mult=0.25, stem_pool=False),
    }

def centre_output(feats):
    """ReLU, then the sum over channels, of the unit(s) nearest the image centre of the last feature map
    (RepLKNet's ERF code applies the ReLU too; without it, a sum over channels right after a LayerNorm with
    its initial weight 1 is a constant: sum_c (z_c - mean z) = 0, and the gradient would vanish)."""
    if feats.ndim == 3:                                             # (B, N, D) tokens of a ViT
        s = int(round(feats.shape[1] ** 0.5))
        feats = feats.transpose(1, 2).reshape(feats.shape[0], -1, s, s)   # (B, D, s, s)
    h, w = feats.shape[-2:]
    rows = [h // 2] if h % 2 else [h // 2 - 1, h // 2]
    cols = [w // 2] if w % 2 else [w // 2 - 1, w // 2]
    return F.relu(feats[:, :, rows][:, :, :, cols]).sum()

def erf(model, images):
    model.eval()
    # a fresh leaf every time (on the CPU, .to() would return `images` itself and its .grad would accumulate)
    x = images.detach().clone().to(next(model.parameters()).device).requires_grad_(True)
    centre_output(model.forward_features(x)).backward()
    g = x.grad.abs().sum(1)                                         # (B, H, W)
    g = g / g.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1)     # each image's map sums to 1
    return g.mean(0).cpu()                                          # (H, W) averaged over images

def area_share(m, mass):
    v = m.flatten().sort(descending=True).values
    return 100.0 * float(((v.cumsum(0) < mass).sum() + 1) / v.numel())

n_img = 8 if SMOKE else 64
FASHION = "fashion-mnist"
if SMOKE and find_fashion_mnist("data") is None:   # CI has no Fashion-MNIST: its smoke steps use the embedded task
    FASHION = "nearest-color"
    print("smoke: Fashion-MNIST is not installed here; these smoke steps run on nearest-color instead")
_, val_loader, _ = build_loaders(FASHION, img_size=IMG, batch_size=n_img, train_size=64 if SMOKE else 256,
                                 val_size=n_img, augment="none")
images = next(iter(val_loader))[0]
models = make_models()
erf_untrained = {name: erf(m, images) for name, m in models.items()}
for name, m in models.items():
    e = erf_untrained[name]
    print(f"untrained {name:24s} {count_params(m) / 1e6:5.2f}M params: 50% of the gradient in "
          f"{area_share(e, 0.5):5.1f}% of the image, 90% in {area_share(e, 0.9):5.1f}%")

# %% [markdown]
# The same four models after a short training on Fashion-MNIST (the same recipe and steps for each; a minute or
# two each on a CPU).

# %%
RECIPE = dict(epochs=2, lr=2e-3, warmup_epochs=0.5, weight_decay=0.05, label_smoothing=0.1)
train_loader, val_loader2, _ = build_loaders(FASHION, img_size=IMG, batch_size=64,
                                             train_size=64 if SMOKE else 2560, val_size=32 if SMOKE else 2000,
                                             augment="basic")
histories = {}
for name, m in models.items():
    cfg = TrainConfig(**RECIPE, seed=0, progress=False, log=False, max_steps_per_epoch=2 if SMOKE else None)
    t0 = time.time()
    histories[name] = fit(m, train_loader, val_loader2, cfg)
    print(f"{name:24s} val acc {100 * histories[name]['val_acc'][-1]:5.1f}% after {cfg.epochs} epochs "
          f"({time.time() - t0:.0f}s)")
erf_trained = {name: erf(m, images) for name, m in models.items()}
for name in models:
    e = erf_trained[name]
    print(f"trained   {name:24s}: 50% of the gradient in {area_share(e, 0.5):5.1f}% of the image, "
          f"90% in {area_share(e, 0.9):5.1f}%")

# %%
fig, ax = plt.subplots(2, 4, figsize=(14, 7))
for j, name in enumerate(models):
    for i, (maps, when) in enumerate([(erf_untrained, "untrained"), (erf_trained, "trained")]):
        e = maps[name]
        ax[i, j].imshow(e / e.max(), cmap="magma", vmin=0, vmax=1)
        ax[i, j].set_title(f"{name}\n{when}: 90% mass in {area_share(e, 0.9):.0f}%", fontsize=9)
        ax[i, j].set_xticks([]); ax[i, j].set_yticks([])
plt.suptitle(f"effective receptive field of the centre output ({IMG} px, mean over {len(images)} images)")
plt.tight_layout(); plt.show(); plt.close(fig)

# %% [markdown]
# ## 5. Does the Dilated Reparam Block help at this scale? A 3-seed study
#
# Three arms, the same data, steps and recipe, three seeds each (paired by seed): UniRepLKNet with the dilated
# branches (the paper), the same network **without** them (only the 13x13 kernel + BN: `branches=False`, an
# ablation switch of this repository) and ConvNeXt with the same widths. At 32 px the 13x13 kernels already
# cover the whole 4x4 / 2x2 / 1x1 maps of stages 2-4, so this is a small-image test, not the paper's setting.

# %%
STUDY = S.Study(
    name="unireplknet-fashion", paper="unireplknet", data="fashion-mnist", img_size=IMG,
    question="At 32 px on Fashion-MNIST, do the Dilated Reparam Block's branches help UniRepLKNet "
             "(same network without them; ConvNeXt with the same widths for reference)?",
    arms={"unireplknet (branches)": {"model": "unireplknet_a", "model_kwargs": {"dims": list(DIMS)}},
          "unireplknet (no branches)": {"model": "unireplknet_a",
                                        "model_kwargs": {"dims": list(DIMS), "branches": False}},
          "convnext (same dims)": {"model": "convnext_atto", "model_kwargs": {"dims": list(DIMS)}}},
    recipe=dict(epochs=2, batch_size=64, train_size=2560, val_size=2000, lr=2e-3, warmup_epochs=0.5,
                weight_decay=0.05, label_smoothing=0.1, augment="basic", data_seed=0))
if STUDY.name not in S.STUDIES:
    S.register(STUDY)
results = S.load_or_run(STUDY.name, seeds=(0, 1, 2), smoke=SMOKE)
print(S.summarize(results))
S.plot_curves(results, title="val accuracy, mean over seeds (band: min-max)")
plt.show(); plt.close("all")

# %% [markdown]
# ## 6. What this notebook shows
#
# *(Numbers printed by the committed CPU run above; tiny models, 80 training steps: read them as what they are.)*
#
# * **Counts**: every variant's deploy-form count rounds to the paper's figure (XL's 386.53M is printed as 386M,
#   truncated), and A..S equal the counts of the authors' code in both forms (section 2).
# * **Re-parameterisation is exact**: each step matches an independent computation (BN fold 1.3e-15, Eq. 1 and
#   the padding bit-exact), a whole Dilated Reparam Block 1.0e-15, UniRepLKNet-A end to end 9.2e-16 in float64
#   and 3.3e-07 in float32, and the converted weights load strictly into `deploy=True` (section 3). It also
#   pays: the deploy form of UniRepLKNet-A ran a batch of 8 at 224 px in 113 ms vs 139 ms for the training form
#   in eval mode (1.2x, one measurement on a shared CPU).
# * **The branches did not help at this scale**: over 3 seeds, UniRepLKNet with the dilated branches reached
#   59.1 +- 3.7% validation accuracy, without them 61.2 +- 2.7%, ConvNeXt with the same widths 61.8 +- 1.7%;
#   every paired difference's 95% interval contains 0 (branches minus no branches: -2.1 points, [-12.2, +8.0]).
#   No measurable difference, after 80 steps at 32 px where a 13x13 kernel already covers the 4x4 and smaller
#   maps of stages 2-4: this says nothing about the paper's ImageNet ablation. Training with the branches was
#   the slowest arm on this CPU (59 s per run vs 14 s without, on a shared machine).
# * **Effective receptive fields** (section 4; one network each, one seed; "50% in X%" = the centred share of the
#   image holding half the gradient mass). Untrained: UniRepLKNet 25.9% (90% of the mass in 73.5%), ConvNeXt
#   37.6% (84.2%), iiANET 24.3% (68.7%), LKCA-T 2.5% (5.3%). LKCA-T's kernels start at zero, so at
#   initialisation a token gathers nothing from the others and its ERF is its own patch. After 2 epochs of
#   Fashion-MNIST: UniRepLKNet 25.4% (72.1%), ConvNeXt 33.6% (81.0%), iiANET 28.1% (69.7%), LKCA-T 4.7% (59.2%).
#   The three ConvNets' ERFs barely moved in 80 steps, while LKCA-T's 90% region grew from 5.3% to 59.2% of
#   the image: its learned kernels started to gather from far away. At 32 px every model's stage-4 units
#   already see the whole image, so these numbers compare how the gradient is *spread*, not what can be seen.

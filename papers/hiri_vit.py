"""HIRI-ViT: Scaling Vision Transformer with High Resolution Inputs.

Ting Yao, Yehao Li, Yingwei Pan, Tao Mei (HiDream.ai), arXiv:2403.11999 (2024).

The idea. Feeding a hybrid CNN/ViT a 448x448 image instead of 224x224 buys accuracy but, in the usual
four-stage design (stride 4 stem, stride 32 at the end), quadruples every stage's token count and so the cost
(Table VII row 7: 4.7 -> 21.5 GFLOPs). HIRI-ViT adds a fifth stage, so the network ends at stride 64 and the
last four stages of a 448 input see exactly the grids a four-stage network sees at 224 (56, 28, 14, 7). The
new, extra-high-resolution front (stem + stage 1, at 224^2 and 112^2) is made cheap by splitting every CNN
operation into two parallel branches: a *high-resolution* branch that does very little (one depthwise
conv) at full resolution, and a *low-resolution* branch that first downsamples and then does the heavy work
(full convs / an FFN) on 4x fewer pixels. The result: 448 inputs for ~5 GFLOPs (HIRI-ViT-S, 84.3% top-1).

Section / equation map
    §4.1, Fig. 3c        HR-stem                          -> class HRStem
    §4.2, Fig. 4         HR block (stages 1-2)            -> class HRBlock
    §4.3, Fig. 5b        IRDS-a (stage 1->2, 2->3)        -> class IRDSa
    §4.3, Fig. 5c        IRDS-b (stage 3->4, 4->5)        -> class IRDSb
    §3 Eq. 3, §4.4       CFFN block, pre-BN (stage 3)     -> class CFFNBlock
    §3 Eq. 1 + Eq. 3     Transformer block (stages 4-5)   -> class TransformerBlock (Attention + ConvFFN)
    §4.4                 BN in stages 1-3, LN in 4-5      -> the block classes; fuse_bn() folds the BNs
    §4.5 Eq. 5           EMA distillation needs the logits map before pooling -> HIRIViT.forward_dense
                         (the loss itself is in common/distill.py: it is a training recipe, not a layer)
    §4.6, Table I        S / B / L                         -> hiri_vit_s / hiri_vit_b / hiri_vit_l
    (not in the paper)   1x1 conv of width E_5*C_5 + GELU before pooling -> ClassifierHead.pre (What differs 4)
    §5.4, Table VII r.1  four-stage M-ViT baseline         -> class MViT, factory mvit_s
    Table II             224 / 384 / 448 inputs           -> layout_for(img_size)
    (convention)         softmax maps of every attention  -> attention_maps(model, x)

What differs from the paper or the authors' code, and why
    No public code was found (no repository of HIRI-ViT, its HR-stem or its IRDS; the authors' group
    repository holds CoTNet / Wave-ViT / Dual-ViT only), so nothing can differ from it; the list below is where
    this file knowingly departs from, or adds to, the paper text.
    1. Resolution. Table II gives HIRI-ViT-S the same parameters and nearly the same GFLOPs at 224 (4.5) and
       448 (5.0). A fixed stride-64 network cannot do that (224/64 is not whole; 4x the pixels is ~4x the
       MACs), so the 224 model must keep the 448 grids where the cost is. Which stride is dropped is not in
       the text; we measured the candidates (notebook, README): dropping a stem stride (stages see
       112/56/28/14/7 at 224) costs exactly as much as 448, i.e. 5.04/9.93/20.53 G against the paper's
       4.5/8.2/17.0 (+12/+21/+21%). Keeping the stride-4 stem and giving the *second IRDS-a stride 1*
       (stages at 56/28/28/14/7) gives 4.53/8.08/17.03 G, within 1.5% of all three 224 rows, so that is
       what layout_for(224) does. At 384 (a multiple of 64) Table I's layout is used (96/48/24/12/6): our
       3.66/7.21/14.92 G are 18-22% under the paper's 4.7/9.3/18.2; none of the 16 IRDS stride layouts
       matches all three 384 rows (notebook section 2), so the 384 rows are a documented miss (pinned in the
       tests). The same layout at 768 gives 16.11/31.62/65.33 G against Table III's 16.1/31.6/63.4.
    2. GFLOPs are read as MACs (the PVT/Swin convention), counted with torch.utils.flop_counter including
       the attention matmuls (the fast SDPA path is counted too); norms/activations are not counted.
    3. We add stochastic depth (drop_path_rate, default 0) and head dropout as options; the paper does not
       mention them.
    4. Head: final LN, then a 1x1 conv to E_5*C_5 channels + GELU, global average pooling, FC. **The 1x1 conv
       is not in the paper** (which describes no head; Table I ends at stage 5). Without it (GAP + FC from
       C_5) the counts are 31.36M / 49.74M / 89.64M, 9.9% / 8.6% / 5.0% short of Table II; with it, 34.72M /
       54.36M / 94.25M. The conv itself holds 1.31M of S's parameters, and because the FC then reads E_5*C_5
       instead of C_5 features, the head grows by 3.36M in all (head 3.87M = 11% of S). The width E_5*C_5
       (the stage-5 FFN width; MobileNetV3 / CMT [8] put a wide 1x1 conv here) was chosen because it closes
       the gap for all three sizes at once: the parameter match is therefore **fitted**, not an independent
       confirmation. It keeps average pooling directly before a linear classifier, which is what Eq. 5
       assumes (the pooled logits are the mean of the per-position logits). head_width=0 builds GAP + FC.

What the paper leaves open (each choice below; "counts" = they bring params/MACs close to Table II)
    1. HR-stem widths: the first 3x3/2 conv outputs C0 = C1 channels (stem_width); both branches end at C1.
       High-res branch: a 3x3 depthwise conv (+BN+GELU) on the first conv's H/2 output, then a 3x3/2 conv
       C0->C1. Low-res branch: 3x3/2 conv C0->C1 (+BN+GELU), 3x3 conv (+BN+GELU), 1x1 conv. Sum -> BN (as
       the text says).
    2. HR block: out = x + DW3x3_BN(x) + Up2(FFN(DW3x3/2_BN(x))), FFN = 1x1 conv (E*C) + BN + GELU, 1x1
       conv + BN; upsampling = nearest repetition (the text: "upsampled via repetition"); fusion = sum with
       an identity residual (Fig. 4 itself is not in the text).
    3. IRDS-a: 3x3/2 conv C_in -> 4*C_in (+BN+GELU), 1x1 conv -> C_out (+BN). IRDS-b: MobileNetV2's inverted
       residual with its expansion 6: 1x1 conv C_in -> 6*C_in (+BN+GELU, the only norm/activation, as the text
       says), 3x3/2 depthwise, 1x1 conv -> C_out. The "extra downsampling shortcut": 2x2 average pool + 1x1
       conv (+BN in IRDS-a), ResNet-D style. Check: the same IRDS in the four-stage layout add +0.45M over
       single 3x3/2 convs; Table VII row 5 -> 6 says +0.3M.
    4. CFFN block (stage 3): x + CFFN(BN(x)) with Eq. 3 as written, CFFN(X) = FC(DWConv(z) + z),
       z = GELU(FC(X)). Where the BN goes is not drawn anywhere. The text gives its history: Table VII row 3
       removes MHA from pre-LN Transformer blocks, leaving x + CFFN(LN(x)), and row 4 / §4.4 "replace LN with
       BN" in the CFFN block, a one-for-one swap, so the pre-norm becomes a BN. (An earlier version of this
       file put a BN after every conv inside Eq. 3 instead; that adds norms the equation does not have and
       removes the block's pre-norm: 2816 more parameters for S.) The pre-BN folds exactly into the first 1x1
       FC, which is §4.4's stated reason for BN (inference speed). §4.4's "Moreover, we also replace LN with
       BN for CFFN block" could also be read as the CFFN sub-layer of the stage 4-5 Transformer blocks; the
       same paragraph says "LN is applied on the last two stages", so those keep LN here. (BN and LN have the
       same parameter count and norms are not counted as MACs, so the tables cannot decide this.)
    5. Transformer block (stages 4-5): pre-LN; MHSA with qkv/out projections (with bias), head width
       C/heads = 64 in every Table I column, no K/V spatial reduction (the baseline text says its last two
       stages use none, and stages 4-5 are those stages); its FFN is Eq. 3's CFFN without BN, 3x3 DW, GELU.
    6. Activation GELU everywhere; BN momentum/eps PyTorch defaults; LN eps 1e-6; a final LN after stage 5.
    7. The M-ViT baseline (Table VII row 1; "similar to PVT"): ViT-stem 7x7/4 conv + LN, widths 64/128/320/512
       (HIRI-ViT-S's stages 2-5), depths 2/2/9/4, heads 1/2/5/8, K/V spatial reduction 8/4/1/1 by a strided conv
       + LN, plain FFN (Eq. 2) with ratios 8/8/5/5, 3x3/2 conv + LN between stages, LN, and the same head as
       HIRI-ViT (with the 1x1 conv that is not in the paper): 35.33M (paper 35.0M), 4.82 GMACs at 224 (paper
       4.4).

Parameters (1000 classes; exact, pinned in tests/test_hiri_vit.py) and MACs (G, incl. attention matmuls),
this file vs Tables II / III. "fitted": the head's 1x1 conv (not in the paper) was sized to close the gap.

    variant      paper   here (fitted)        without the 1x1 conv    224 paper/here  384 paper/here  448 paper/here  768 (Table III)
    hiri_vit_s   34.8M   34,719,528 (-0.2%)   31,358,248 (-9.9%)      4.5  / 4.53     4.7  / 3.66     5.0  / 5.04     16.1 / 16.11
    hiri_vit_b   54.4M   54,355,624 (-0.1%)   49,744,424 (-8.6%)      8.2  / 8.08     9.3  / 7.21     9.9  / 9.93     31.6 / 31.62
    hiri_vit_l   94.4M   94,252,040 (-0.2%)   89,640,840 (-5.0%)      17.0 / 17.03    18.2 / 14.92    19.9 / 20.53    63.4 / 65.33
    mvit_s       35.0M   35,331,624 (+0.9%)                           4.4  / 4.82     (448: 22.74; Table VII row 7, a later variant: 21.5)

    Every MAC entry at 224 / 448 / 768 is within 2% of the paper except L at 448 (+3.2%) and 768 (+3.0%).
    Why L: stages 3-5 and the head cost exactly the same at 224 and 448 (15.00 G for L), so the 448 - 224
    difference is the front alone (HR-stem, stages 1-2, IRDS-a): ours +3.50 G vs the paper's +2.9 G (S: +0.51
    vs +0.5; B: +1.84 vs +1.7). L has by far the widest and deepest front (C1/C2 = 80/160, 4 + 4 HR blocks;
    5.53 G of its 20.53 G at 448), and every internal of the front is a paper-silent choice (leaves open
    1-3). A front ~11% heavier than the paper's (0.63 G of 5.53 G at 448) predicts ~1.8 G too many at 768
    (front 16.25 G there); we see 1.93 G. At 224 L's front is 2.03 G, so its share of the miss is small there.
    This is an inference from the counts, not a confirmed cause.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

PAPER_PARAMS = {"hiri_vit_s": 34.8e6, "hiri_vit_b": 54.4e6, "hiri_vit_l": 94.4e6, "mvit_s": 35.0e6}
# Table II, "GFLOPs" (read as GMACs) at 224 / 384 / 448, and Table III at 768.
PAPER_GFLOPS = {"hiri_vit_s": {224: 4.5, 384: 4.7, 448: 5.0, 768: 16.1},     # 768: Table III
                "hiri_vit_b": {224: 8.2, 384: 9.3, 448: 9.9, 768: 31.6},
                "hiri_vit_l": {224: 17.0, 384: 18.2, 448: 19.9, 768: 63.4},
                "mvit_s": {224: 4.4}}


# --------------------------------------------------------------------------------------------------------
# Input checks (CONTRIBUTING.md: say what was expected and what to do)
# --------------------------------------------------------------------------------------------------------
def _check_input(x: torch.Tensor, img_size: int, stride: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (B, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise ValueError(f"expected a batch of images (B, 3, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 input channels (RGB), got {x.shape[1]} (shape {tuple(x.shape)})")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a float tensor, got {x.dtype}; convert pixels with x.float() / 255 and "
                        "normalise them (e.g. with the ImageNet mean/std)")
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"this model was built for img_size={img_size} (total stride {stride}), so H and W "
                         f"must be multiples of {stride}; got {h}x{w}. Resize the input or rebuild the model "
                         f"with img_size={h if h == w else (h, w)}")


# FX symbolic tracing (torchvision's create_feature_extractor) cannot run Python `if`s on traced shapes: wrap
# makes the check one opaque call in the traced graph (it still runs, on real tensors, when the graph runs).
torch.fx.wrap("_check_input")


def layout_for(img_size: int) -> tuple[int, int, int, int]:
    """Strides of the four IRDS layers for a square input of side `img_size` (Table II's 224/384/448 rows).

    The HR-stem always has stride 4 (Table I: "High Resolution Stem 4x4", stage 1 at H/4).
    * img_size % 64 == 0 (384, 448, 512, ...): (2, 2, 2, 2), Table I's layout, total stride 64.
    * else img_size % 32 == 0 (224, 288, 352, ...): (2, 1, 2, 2). The second IRDS-a keeps the grid, so a
      224 input runs stages 1-2 at 56 and 28 (like a four-stage network at 224) and stages 3-5 at 28, 14, 7:
      the grids a 448 input has there, where almost all the MACs are. This is the only layout whose MACs
      match all three of Table II's 224 rows (4.5 / 8.2 / 17.0 GFLOPs; see the README table and the notebook).
    * anything else cannot give a whole grid at every stage: ValueError.
    """
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size <= 0:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    if img_size % 64 == 0:
        return (2, 2, 2, 2)
    if img_size % 32 == 0:
        return (2, 1, 2, 2)
    lo, hi = (img_size // 32) * 32, (img_size // 32 + 1) * 32
    raise ValueError(f"HIRI-ViT needs img_size to be a multiple of 64 (e.g. 384, 448: total stride 64) or of 32 "
                     f"(e.g. 224: stage 3 keeps stage 2's grid, total stride 32) so that all five stages get a "
                     f"whole grid; got {img_size}. Use {lo if lo else 32} or {hi}")


class DropPath(nn.Module):  # [not in paper: stochastic depth, an option that is off by default]
    """Stochastic depth on a residual branch (not in the paper; off by default)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias: BN follows) + BN (+ GELU), the "conv + BN" unit of the paper's CNN parts (§4.4).
    One nn.Sequential because fuse_bn() folds a BN into the conv that precedes it in the same Sequential
    (and common/kernels fuses a stride-1 depthwise conv with its BN/activation only inside a plain Sequential)."""
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.GELU())
    return nn.Sequential(*layers)


def upsample_repeat(x: torch.Tensor, naive: bool = False) -> torch.Tensor:
    """x2 upsampling "via repetition" (§4.2): every low-resolution pixel is copied into a 2x2 block.
    Fast path: F.interpolate(nearest); naive path: repeat_interleave along H then W (a test asserts equal)."""
    if naive:
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (B, C, 2h, 2w)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2h, 2w)


# --------------------------------------------------------------------------------------------------------
# §4.1 HR-stem (Fig. 3c)
# --------------------------------------------------------------------------------------------------------
class HRStem(nn.Module):
    """3x3 strided conv, then two parallel branches summed and batch-normalised.

    high-res branch: light 3x3 depthwise conv at the first conv's resolution, then a 3x3/2 conv;
    low-res branch:  3x3/2 conv first, then 3x3 and 1x1 convs on 4x fewer pixels (where the work is).
    Total stride 4 (Table I).
    """

    def __init__(self, cout: int, stem_width: Optional[int] = None):
        super().__init__()
        c0 = stem_width or cout  # [paper silent: the first conv's width; we use C1]
        self.first = conv_bn(3, c0, 3, stride=2)                             # "strided conv (s=2, k=3)"
        # [paper silent: BN+GELU after the first conv and after the depthwise conv]
        self.hr_dw = conv_bn(c0, c0, 3, groups=c0)                           # light depthwise conv (+BN+GELU)
        self.hr_down = nn.Conv2d(c0, cout, 3, stride=2, padding=1, bias=False)  # then a strided conv
        # [paper silent: the low-res branch's kernel sizes (3x3/2, 3x3, 1x1) and widths (all C1)]
        self.lr = nn.Sequential(conv_bn(c0, cout, 3, stride=2),              # downsample first,
                                conv_bn(cout, cout, 3),                      # then a 3x3 conv
                                nn.Conv2d(cout, cout, 1, bias=False))        # and a 1x1 conv
        self.norm = nn.BatchNorm2d(cout)                                     # "the sum ... normalized via BN"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)                                 # (B, C0, H/2, W/2)
        hr = self.hr_down(self.hr_dw(x))                  # (B, C1, H/4, W/4)
        lr = self.lr(x)                                   # (B, C1, H/4, W/4)
        return self.norm(hr + lr)                         # (B, C1, H/4, W/4)

    @torch.no_grad()
    def _fuse_bn(self) -> None:
        """BN(a + b) = s*a + s*b + t: scale both branches' last convs by s and give one of them the bias t."""
        if isinstance(self.norm, nn.Identity):
            return
        s, t = _bn_scale_shift(self.norm)
        for i, conv in enumerate((self.hr_down, self.lr[2])):
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            bias=True).to(conv.weight)
            new.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
            new.bias.copy_(t if i == 0 else torch.zeros_like(t))
            if i == 0:
                self.hr_down = new
            else:
                self.lr[2] = new
        self.norm = nn.Identity()


# --------------------------------------------------------------------------------------------------------
# §4.2 HR block (Fig. 4), stages 1-2
# --------------------------------------------------------------------------------------------------------
class HRBlock(nn.Module):
    """out = x + DW(x) + Up2(FFN(DW_s2(x))): a light full-resolution branch in parallel with an FFN that runs
    on a 2x-downsampled copy (4x fewer pixels) and is copied back up by repetition."""

    def __init__(self, dim: int, ffn_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * ffn_ratio)
        # [paper silent: Fig. 4's contents are not in the text; BN after each conv, GELU only inside the FFN]
        self.hr = conv_bn(dim, dim, 3, groups=dim, act=False)               # "light-weight depth-wise conv"
        self.lr_down = conv_bn(dim, dim, 3, stride=2, groups=dim, act=False)  # "strided DW conv (s2,k3) + BN"
        self.lr_ffn = nn.Sequential(conv_bn(dim, hidden, 1),                # FC + BN + activation
                                    conv_bn(hidden, dim, 1, act=False))     # FC + BN
        self.drop_path = DropPath(drop_path)
        self.naive_upsample = False   # True: the repeat_interleave reference path of upsample_repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hr = self.hr(x)                                   # (B, C, H, W)
        lr = self.lr_ffn(self.lr_down(x))                 # (B, C, H/2, W/2)
        lr = upsample_repeat(lr, self.naive_upsample)     # (B, C, H, W)  "upsampled via repetition"
        return x + self.drop_path(hr + lr)                # (B, C, H, W)  [paper silent: sum + identity]


# --------------------------------------------------------------------------------------------------------
# §4.3 Inverted residual downsampling (Fig. 5b, 5c)
# --------------------------------------------------------------------------------------------------------
class IRDSa(nn.Module):
    """IRDS-a (stages 1->2, 2->3): 3x3/2 conv that expands channels, 1x1 conv that shrinks them, plus a
    downsampling shortcut (2x2 average pool + 1x1 conv + BN). stride=1 (224-style layout, layout_for) keeps
    the grid: the same layer without the pooling."""

    def __init__(self, cin: int, cout: int, ratio: float = 4.0, stride: int = 2):
        super().__init__()
        hidden = int(cin * ratio)  # [paper silent: expansion ratio; 4 brings the counts close to Table II]
        self.main = nn.Sequential(conv_bn(cin, hidden, 3, stride=stride),   # expand + reduce spatial size
                                  conv_bn(hidden, cout, 1, act=False))      # shrink channels
        # "extra downsampling shortcut" [paper silent: its form; 2x2 avg pool + 1x1 conv + BN, ResNet-D style]
        self.shortcut = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                      conv_bn(cin, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)            # (B, C_out, H/s, W/s)


class IRDSb(nn.Module):
    """IRDS-b (stages 3->4, 4->5): an inverted residual block (1x1 expand, 3x3/2 depthwise, 1x1 project)
    with normalisation + activation only after the first conv (§4.3), plus a downsampling shortcut."""

    def __init__(self, cin: int, cout: int, ratio: float = 6.0, stride: int = 2):
        super().__init__()
        hidden = int(cin * ratio)  # [paper silent: expansion ratio; MobileNetV2's 6]
        self.expand = conv_bn(cin, hidden, 1)                                # 1x1, the only BN + GELU
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden)  # 3x3/2 depthwise
        self.project = nn.Conv2d(hidden, cout, 1)                            # 1x1 project
        # "extra downsampling shortcut" [paper silent: its form; 2x2 avg pool + 1x1 conv]
        self.shortcut = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                      nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))         # (B, C_out, H/2, W/2)
        return y + self.shortcut(x)                       # (B, C_out, H/2, W/2)


# --------------------------------------------------------------------------------------------------------
# §3 Eq. 3 + §4.4: CFFN block with BN (stage 3)
# --------------------------------------------------------------------------------------------------------
class CFFNBlock(nn.Module):
    """x + CFFN(BN(x)), CFFN(X) = FC(DWConv(z) + z), z = GELU(FC(X))  (Eq. 3), on (B, C, H, W) maps.

    Where the BN sits: the CFFN block is what is left of a pre-LN Transformer block once its attention is
    removed (Table VII row 3, "Remove MHA"): x + CFFN(LN(x)). Row 4 / §4.4 then "replace LN with BN" in it,
    a one-for-one swap, so the block's pre-norm becomes a BN and Eq. 3 itself stays as written (no norm
    inside). A pre-BN folds exactly into the following 1x1 FC at inference (fuse_bn), which is the speed-up
    §4.4 gives as the reason for BN."""

    def __init__(self, dim: int, ffn_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * ffn_ratio)
        self.norm = nn.BatchNorm2d(dim)                                      # the pre-LN, "replaced with BN"
        self.fc1 = nn.Conv2d(dim, hidden, 1)                                 # FC on a map = 1x1 conv
        self.act = nn.GELU()                                                 # sigma [paper silent: GELU]
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)     # DWConv [paper silent: 3x3]
        self.fc2 = nn.Conv2d(hidden, dim, 1)                                 # FC
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.fc1(self.norm(x)))              # (B, E*C, H, W)  z = sigma(FC(BN(x)))
        z = self.dw(z) + z                                # (B, E*C, H, W)  Eq. 3: DWConv(z) + z
        return x + self.drop_path(self.fc2(z))            # (B, C, H, W)    x + FC(...)


# --------------------------------------------------------------------------------------------------------
# §3 Eq. 1 + Eq. 3: Transformer block (stages 4-5, LN)
# --------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention, Eq. 1: softmax(Q K^T / sqrt(d)) V per head, then W^O.
    Fast path F.scaled_dot_product_attention; naive path written out (`self.naive = True`).
    `keep_attn = True` takes the naive path and stores the softmax map, detached, in `self.last_attn`:
    shape (B, h, N, N) (N = H*W tokens; SRAttention: (B, h, N, N/sr^2)). See attention_maps()."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)  # [paper silent: biases on q, k, v and W^O]
        self.proj = nn.Linear(dim, dim)                   # W^O
        self.naive = False
        self.keep_attn = False

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.naive or self.keep_attn:
            attn = ((q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)).softmax(dim=-1)  # (B, h, N, M)
            if self.keep_attn:
                self.last_attn = attn.detach()
            return attn @ v                               # (B, h, N, d)
        return F.scaled_dot_product_attention(q, k, v)    # (B, h, N, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape                                 # (B, N, D)
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)              # each (B, h, N, d)
        out = self._attend(q, k, v)                       # (B, h, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)        # (B, N, D)  Concat(head_0..head_h)
        return self.proj(out)                             # (B, N, D)


class ConvFFN(nn.Module):
    """Eq. 3 on tokens: FC(DWConv(z) + z), z = GELU(FC(X)); the depthwise conv needs the (H, W) grid."""

    def __init__(self, dim: int, ffn_ratio: float):
        super().__init__()
        hidden = int(dim * ffn_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()                                                 # sigma [paper silent: GELU]
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)     # DWConv [paper silent: 3x3]
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        z = self.act(self.fc1(x))                         # (B, N, E*D)
        zmap = z.transpose(1, 2).reshape(b, -1, *hw)      # (B, E*D, H, W)
        z = z + self.dw(zmap).flatten(2).transpose(1, 2)  # (B, N, E*D)  DWConv(z) + z
        return self.fc2(z)                                # (B, N, D)


class TransformerBlock(nn.Module):
    """Pre-LN Transformer block: x + MHSA(LN(x)), then x + CFFN(LN(x)). Works on (B, C, H, W) maps."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)          # §4.4: LN in stages 4-5 [paper silent: eps]
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, ffn_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                  # (B, N, C), N = H*W
        t = t + self.drop_path(self.attn(self.norm1(t)))  # (B, N, C)
        t = t + self.drop_path(self.ffn(self.norm2(t), (h, w)))  # (B, N, C)
        return t.transpose(1, 2).reshape(b, c, h, w)      # (B, C, H, W)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)


# --------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------
@dataclass
class HIRIConfig:
    """One Table I column. Stages 1-2: HR blocks; stage 3: CFFN blocks; stages 4-5: Transformer blocks."""
    widths: Sequence[int] = (32, 64, 128, 320, 512)        # C_1..C_5
    depths: Sequence[int] = (2, 2, 2, 9, 4)
    ffn_ratios: Sequence[float] = (4, 4, 6, 5, 5)          # E_1..E_5
    heads: Sequence[int] = (0, 0, 0, 5, 8)                 # HD_4, HD_5 (stages 1-3 have no attention)
    stem_width: Optional[int] = None                       # C0 of the HR-stem's first conv (None: C_1)
    irds_ratios: Sequence[float] = (4.0, 6.0)              # IRDS-a / IRDS-b expansion, relative to the input width
    head_width: Optional[int] = None                       # pre-logits width (None: E_5 * C_5; 0: GAP + FC)
    stage_types: Sequence[str] = ("hr", "hr", "cffn", "t", "t")  # Table VIII's ablation knob


def _make_block(kind: str, dim: int, ratio: float, heads: int, dp: float) -> nn.Module:
    if kind == "hr":
        return HRBlock(dim, ratio, dp)
    if kind == "cffn":
        return CFFNBlock(dim, ratio, dp)
    if kind == "t":
        return TransformerBlock(dim, heads or max(1, dim // 64), ratio, dp)
    raise ValueError(f"unknown block kind {kind!r}; expected 'hr', 'cffn' or 't'")


class ClassifierHead(nn.Module):
    """[Pre-logits 1x1 conv + GELU: not in the paper, see "What differs" 4], global average pool, FC.
    Because pooling sits directly before the linear FC, the mean of the per-position logits equals the
    pooled logits exactly (used by forward_dense). head_width=0 gives the paper's plain GAP + FC."""

    def __init__(self, dim: int, num_classes: int, head_width: int = 0, dropout: float = 0.0):
        super().__init__()
        # [not in paper: a 1x1 conv to E_5*C_5 channels + GELU before pooling; it fits the parameter counts]
        self.pre = (nn.Sequential(nn.Conv2d(dim, head_width, 1), nn.GELU()) if head_width else nn.Identity())
        self.dropout = nn.Dropout(dropout)  # [not in paper: head dropout, off by default]
        self.fc = nn.Linear(head_width or dim, num_classes)

    def forward(self, feats: torch.Tensor, pool: bool = True) -> torch.Tensor:
        z = self.pre(feats)                               # (B, W, h, w)
        if pool:
            return self.fc(self.dropout(z.mean((2, 3))))  # (B, classes)
        return torch.einsum("bchw,kc->bkhw", z, self.fc.weight) + self.fc.bias.view(1, -1, 1, 1)  # (B, K, h, w)


class HIRIViT(nn.Module):
    """HR-stem + five stages (Table I) + head. forward_features returns the normalised stage-5 map
    (B, C_5, H/s, W/s) with s = self.total_stride = 4 * prod(ds_strides) (64 for Table I's layout, e.g. 448
    or 384; 32 for layout_for(224))."""

    def __init__(self, cfg: HIRIConfig = HIRIConfig(), num_classes: int = 1000, img_size: int = 448,
                 ds_strides: Optional[Sequence[int]] = None, drop_path_rate: float = 0.0,
                 dropout: float = 0.0):
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if ds_strides is None:
            ds_strides = layout_for(img_size)
        if len(ds_strides) != 4 or any(s not in (1, 2) for s in ds_strides):
            raise ValueError(f"ds_strides must be four strides of 1 or 2, got {ds_strides}")
        self.cfg, self.num_classes, self.img_size = cfg, num_classes, img_size
        self.ds_strides, self.total_stride = tuple(ds_strides), 4 * math.prod(ds_strides)
        if img_size % self.total_stride:
            raise ValueError(f"img_size={img_size} is not a multiple of the total stride {self.total_stride}")
        w, d = list(cfg.widths), list(cfg.depths)
        self.stem = HRStem(w[0], cfg.stem_width)
        dpr = [drop_path_rate * j / max(1, sum(d) - 1) for j in range(sum(d))]  # [not in paper: stoch. depth]
        self.downsamples, self.stages = nn.ModuleList(), nn.ModuleList()
        k = 0
        for i in range(5):
            if i > 0:   # IRDS-a into stages 2-3, IRDS-b into stages 4-5 (§4.3)
                ds = IRDSa if i <= 2 else IRDSb
                self.downsamples.append(ds(w[i - 1], w[i], cfg.irds_ratios[0 if i <= 2 else 1], ds_strides[i - 1]))
            self.stages.append(nn.Sequential(*[_make_block(cfg.stage_types[i], w[i], cfg.ffn_ratios[i],
                                                           cfg.heads[i], dpr[k + j]) for j in range(d[i])]))
            k += d[i]
        # §4.4: LN in the last two stages; the Transformer blocks are pre-LN, so one LN closes stage 5.
        self.norm = ChannelLayerNorm(w[-1], eps=1e-6)  # [paper silent: a final norm; usual for pre-LN]
        # [not in paper: head_width = E_5 * C_5 (the 1x1 conv in ClassifierHead); 0 gives GAP + FC]
        head_width = int(cfg.ffn_ratios[-1] * w[-1]) if cfg.head_width is None else cfg.head_width
        self.head = ClassifierHead(w[-1], num_classes, head_width, dropout)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.img_size, self.total_stride)
        x = self.stem(x)                                  # (B, C1, H/4, W/4)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)            # (B, C_i, H_{i-1}/s_i, W_{i-1}/s_i), s_i = ds_strides[i-1]
            x = stage(x)                                  # (B, C_i, H_i, W_i)
        return self.norm(x)                               # (B, C5, H/total_stride, W/total_stride)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)                           # (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, classes)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position logits before the average pooling (Eq. 5's teacher map): (B, classes, h, w).
        Their spatial mean equals forward(x) exactly (the head is linear after the pooling)."""
        return self.head(self.forward_features(x), pool=False)  # (B, classes, h, w)


def _init_weights(m: nn.Module) -> None:  # [paper silent: initialisation; timm/PVT's trunc-normal and He rules]
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------------
# Table VII row 1 / Fig. 2a: the four-stage M-ViT baseline (PVT-like)
# --------------------------------------------------------------------------------------------------------
class SRAttention(Attention):
    """MHSA whose keys/values come from a strided-conv-reduced map (PVT's spatial reduction, §5.4: used in
    the baseline's first two stages only). sr=1 is plain MHSA. keep_attn: last_attn is (B, h, N, N/sr^2)."""

    def __init__(self, dim: int, heads: int, sr: int = 1):
        super().__init__(dim, heads)
        self.sr = sr
        if sr > 1:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
            del self.qkv
            self.reduce = nn.Sequential(nn.Conv2d(dim, dim, sr, stride=sr), ChannelLayerNorm(dim, eps=1e-6))

    def forward(self, x: torch.Tensor, hw: tuple[int, int] = (0, 0)) -> torch.Tensor:
        if self.sr == 1:
            return super().forward(x)
        b, n, c = x.shape                                 # (B, N, D)
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv_map = self.reduce(x.transpose(1, 2).reshape(b, c, *hw))           # (B, D, H/sr, W/sr)
        kv = self.kv(kv_map.flatten(2).transpose(1, 2))   # (B, N/sr^2, 2D)
        k, v = kv.view(b, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, h, N', d)
        out = self._attend(q, k, v)                       # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, N, D)


class MViTBlock(nn.Module):
    """Pre-LN Transformer block with the plain FFN of Eq. 2 (the baseline before "FFN -> CFFN")."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, sr: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = SRAttention(dim, heads, sr)
        hidden = int(dim * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))  # Eq. 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                  # (B, N, C)
        t = t + self.attn(self.norm1(t), (h, w))          # (B, N, C)
        t = t + self.ffn(self.norm2(t))                   # (B, N, C)
        return t.transpose(1, 2).reshape(b, c, h, w)      # (B, C, H, W)


class MViT(nn.Module):
    """Four-stage M-ViT: ViT-stem (7x7/4 conv + LN), Transformer stages (SR 8/4/1/1), single 3x3/2 conv +
    LN downsampling, LN, GAP + FC. Total stride 32, so its cost grows ~4x from 224 to 448 (Table VII r.7)."""

    # [paper silent: every number of the baseline ("similar to PVT"); see What the paper leaves open 7]
    def __init__(self, widths=(64, 128, 320, 512), depths=(2, 2, 9, 4), heads=(1, 2, 5, 8),
                 ffn_ratios=(8, 8, 5, 5), sr_ratios=(8, 4, 1, 1), num_classes: int = 1000, img_size: int = 224):
        super().__init__()
        if img_size % 32:
            raise ValueError(f"the four-stage M-ViT needs img_size to be a multiple of 32, got {img_size}")
        self.num_classes, self.img_size, self.total_stride = num_classes, img_size, 32
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, stride=4, padding=3),
                                  ChannelLayerNorm(widths[0], eps=1e-6))
        self.downsamples = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1),
                          ChannelLayerNorm(widths[i], eps=1e-6)) for i in range(1, 4))
        self.stages = nn.ModuleList(
            nn.Sequential(*[MViTBlock(widths[i], heads[i], ffn_ratios[i], sr_ratios[i]) for _ in range(depths[i])])
            for i in range(4))
        self.norm = ChannelLayerNorm(widths[-1], eps=1e-6)
        # [not in paper: the same 1x1 head conv as HIRIViT (What differs 4)]
        self.head = ClassifierHead(widths[-1], num_classes, head_width=int(ffn_ratios[-1] * widths[-1]))
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.img_size, self.total_stride)
        x = self.stem(x)                                  # (B, C1, H/4, W/4)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)            # (B, C_i, H_i/2, W_i/2)
            x = stage(x)                                  # (B, C_i, H_i, W_i)
        return self.norm(x)                               # (B, C4, H/32, W/32)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)                           # (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x), pool=False)  # (B, classes, h, w)


# --------------------------------------------------------------------------------------------------------
# §4.4 inference-time BN folding
# --------------------------------------------------------------------------------------------------------
def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN is y = s * x + t with s = gamma / sqrt(var + eps), t = beta - s * mean."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias - s * bn.running_mean


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A single conv equal to bn(conv(x)) in eval mode: W' = s * W, b' = s * (b - mean) + beta."""
    s, t = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight)
    fused.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(t)
    fused.bias.copy_(s * bias + t)
    return fused


@torch.no_grad()
def fold_bn_conv1x1(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A single 1x1 conv equal to conv(bn(x)) in eval mode (a BN *before* the conv, CFFNBlock's pre-BN):
    W (s*x + t) + b = (W * s) x + (W t + b), exact because a 1x1 conv has no padding to see the shift t."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f"a BN before a conv folds exactly only into a dense 1x1 conv, got {conv}")
    s, t = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True).to(conv.weight)
    fused.weight.copy_(conv.weight * s.view(1, -1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels).to(t)
    fused.bias.copy_(bias + conv.weight[:, :, 0, 0] @ t)
    return fused


@torch.no_grad()
def fuse_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every BN that directly follows a conv (consecutive children of an nn.Sequential) into that
    conv, the HR-stem's BN over the sum of its two branches into both branches' last convs, and the CFFN
    block's pre-BN into its first 1x1 FC. Returns an eval-mode model whose outputs equal the original's in
    eval mode; BNs become nn.Identity."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for m in list(model.modules()):
        if isinstance(m, HRStem):
            m._fuse_bn()
        if isinstance(m, CFFNBlock) and isinstance(m.norm, nn.BatchNorm2d):
            m.fc1, m.norm = fold_bn_conv1x1(m.norm, m.fc1), nn.Identity()
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = m._modules[a], m._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    m._modules[a] = fold_conv_bn(conv, bn)
                    m._modules[b] = nn.Identity()
    return model


def set_naive(model: nn.Module, naive: bool = True) -> nn.Module:
    """Switch every fast path to its naive reference (written-out softmax attention, repeat_interleave
    upsampling), or back with naive=False; the tests assert both give the same outputs and gradients."""
    for m in model.modules():
        if isinstance(m, Attention):
            m.naive = naive
        if isinstance(m, HRBlock):
            m.naive_upsample = naive
    return model


def attention_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{qualified module name: softmax attention map (B, h, N, M)} of every attention module for input x
    (HIRI-ViT: stages 4-5, M = N; M-ViT: M = N/sr^2). Runs model(x) under no_grad with every module's
    keep_attn set, then restores the flags and deletes last_attn. Call it on an eval() model: in train mode
    the BNs would update their running statistics."""
    mods = {n: m for n, m in model.named_modules() if hasattr(m, "keep_attn")}
    old = {n: m.keep_attn for n, m in mods.items()}
    try:
        for m in mods.values():
            m.keep_attn = True
        with torch.no_grad():
            model(x)
        return {n: m.last_attn for n, m in mods.items()}
    finally:
        for n, m in mods.items():
            m.keep_attn = old[n]
            if "last_attn" in m.__dict__:
                del m.last_attn


# --------------------------------------------------------------------------------------------------------
# Table I variants
# --------------------------------------------------------------------------------------------------------
CONFIGS = {
    "hiri_vit_s": HIRIConfig(widths=(32, 64, 128, 320, 512), depths=(2, 2, 2, 9, 4),
                             ffn_ratios=(4, 4, 6, 5, 5), heads=(0, 0, 0, 5, 8)),
    "hiri_vit_b": HIRIConfig(widths=(64, 96, 192, 320, 640), depths=(2, 2, 3, 17, 4),
                             ffn_ratios=(4, 4, 5, 4, 5), heads=(0, 0, 0, 5, 10)),
    "hiri_vit_l": HIRIConfig(widths=(80, 160, 224, 448, 640), depths=(4, 4, 5, 25, 5),
                             ffn_ratios=(4, 4, 5, 3, 5), heads=(0, 0, 0, 7, 10)),
}


def _hiri(name: str, num_classes: int, img_size: int, **kwargs) -> HIRIViT:
    cfg_overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in HIRIConfig.__dataclass_fields__}
    cfg = copy.deepcopy(CONFIGS[name])
    for k, v in cfg_overrides.items():
        setattr(cfg, k, v)
    if "widths" in cfg_overrides and "heads" not in cfg_overrides:   # keep Table I's head width of 64
        cfg.heads = tuple(0 if t != "t" else max(1, c // 64) for c, t in zip(cfg.widths, cfg.stage_types))
    return HIRIViT(cfg, num_classes=num_classes, img_size=img_size, **kwargs)


def hiri_vit_s(num_classes: int = 1000, img_size: int = 448, **kwargs) -> HIRIViT:
    """HIRI-ViT-S (Table I): 34.8M params, 4.5 / 4.7 / 5.0 GFLOPs at 224 / 384 / 448 (Table II)."""
    return _hiri("hiri_vit_s", num_classes, img_size, **kwargs)


def hiri_vit_b(num_classes: int = 1000, img_size: int = 448, **kwargs) -> HIRIViT:
    """HIRI-ViT-B (Table I): 54.4M params, 8.2 / 9.3 / 9.9 GFLOPs."""
    return _hiri("hiri_vit_b", num_classes, img_size, **kwargs)


def hiri_vit_l(num_classes: int = 1000, img_size: int = 448, **kwargs) -> HIRIViT:
    """HIRI-ViT-L (Table I): 94.4M params, 17.0 / 18.2 / 19.9 GFLOPs."""
    return _hiri("hiri_vit_l", num_classes, img_size, **kwargs)


def mvit_s(num_classes: int = 1000, img_size: int = 224, **kwargs) -> MViT:
    """Four-stage M-ViT baseline of Table VII row 1 (35.0M, 4.4 GFLOPs at 224)."""
    return MViT(num_classes=num_classes, img_size=img_size, **kwargs)


MODELS = {"hiri_vit_s": hiri_vit_s, "hiri_vit_b": hiri_vit_b, "hiri_vit_l": hiri_vit_l, "mvit_s": mvit_s}

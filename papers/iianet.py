"""iiANET: Inception Inspired Attention Hybrid Network for efficient Long-Range Dependency.

Haruna Yunusa, Qin Shiyin, Abdulrahman Hamman Adama Chukkol, Isah Bello, Adamu Lawan, Abdulganiyu Abdu Yusuf
(arXiv 2407.07603, 2024). Authors' code: github.com/yunusa2k2/iiANET (one file, ``iiANET.py``).

**Idea.** Like an Inception module, every *iiABlock* splits its channels into three groups (1:6:1) and runs
three different operators side by side: a 3x3 *dilated* convolution (a wider local view), an *MBConv*
(1x1 expand, 3x3 depthwise, 1x1 project: cheap local detail) and a *global* 2-D multi-head self-attention
over **all** H*W positions with BoTNet's content-position logits (long-range dependencies, even in the first
stage at 73x73). The three outputs are concatenated. Four stages of iiABlocks (depths 2/3/5/2, heads
1/2/4/8), each followed by "ECANET" channel attention and (stages 1-3) a strided 1x1 convolution, sit between
a convolutional stem and a global-pooling classifier. "Registers" (the paper cites Darcet et al., 2023) are
meant to give the attention somewhere to put the mass it would otherwise dump on uninformative pixels.

Section / equation map
----------------------
* §3.2 "Stem"                                  -> ``IIANet.stem`` (+ the code's 3x3/2 max-pool, see 1.)
* §3.2 "MBConv2", Eq. 1 (depthwise sum)        -> ``MBConvBranch`` (``dw`` is the depthwise Eq. 1)
* §3.2 "Global 2D-MHSA", Eq. 2                 -> ``GlobalMHSA`` (softmax(Q K^T / sqrt(d)) V over all H*W)
* §3.2 "Relative Position Encoding", Eq. 3     -> ``GlobalMHSA.rel_h / rel_w`` and ``position_embedding``:
                                                  logits_ij = (q_i.k_j + q_i.r_j) / sqrt(d), BoTNet-style r
                                                  (``position_term="code"``: the code's r_i.q_j, see 4.)
* §3.2 "Registers", Eqs. 4-6                   -> ``GlobalMHSA.slot_k / slot_v``: learned key/value slots,
                                                  NOT the paper's mechanism (see 3.)
* §3.2 "ECANET ... and down-sampling"          -> ``ECA`` (ECA-Net's 1-D conv, default) or
                                                  ``DenseChannelGate`` (the paper's "1x1 convolution on p",
                                                  = the code; ``eca="dense"``), then ``IIANet.downsample``
* §3.2 "iiABlock", channel ratio r = (1:6:1)   -> ``IIABlock`` (``split_channels``), ``ratio=`` option
* Fig. 2 / the code's ``iiANET`` class         -> ``IIANet`` (4 stages, depths 2/3/5/2, heads 1/2/4/8)
* Table 4 (a)-(e) branch ablations             -> ``iianet_a_mbconv`` ... ``iianet_e_mbconv_mhsa``
* Table 5 ratio 2:4:2 / head size 8 -> 16      -> ``iianet_ratio242`` / ``iianet_heads16``
* Table 6 number of registers 0/1/2/4          -> ``num_registers=`` / ``iianet_reg1`` ... ``iianet_reg4``
* (repository convention) attention maps       -> ``attention_maps(model, x)``

What differs from the paper or the authors' code, and why
---------------------------------------------------------
1. **Stem max-pool kept.** The paper's stem is two 3x3 conv+BN+ReLU (the first stride 2) and "shrinks the
   image to half". The code adds a 3x3/2 max-pool, and both convs are unpadded (299 -> 149 -> 147 -> 73).
   We keep the code's stem and pool (``stem_pool=True``): without the pool stage 1 would be 147x147, global
   attention over 21,609 positions (a 1.9 GB logit matrix per head per image), and the paper's 8.22 GFLOPs
   would be impossible. ``stem_pool=False`` gives the paper's literal stem for small images.
2. **Downsampling is the paper's 1x1 conv with stride 2 (+ BN), not the code's 2x2 max-pool.** It follows
   stages 1-3 (the code has none after stage 4 either; a fourth one would change the total stride of 32).
   A 1x1/2 conv keeps the odd border row (ceil), so at 299 the stage maps are 73/37/19/10 instead of the
   code's 73/36/18/9. The larger maps cost MACs (below) **and parameters**: the position tables hold 2*c*H
   numbers per block, 28,448 in all at 37/19/10 against the code's 27,128 at 36/18/9 (+1,320).
3. **Registers: what is built here are learned key/value slots, not the paper's registers and not Darcet et
   al.'s register tokens.** *Paper* (Eqs. 4-6): an N x HW x HW tensor R_qk "added to Q K^T" and an
   N x (D/head) x HW tensor R_v "added to V", "then the register token is discarded"; it never says how N
   register maps are added to one head's logits. *Code*: both tensors are packed in as an extra attention
   **head** that is unpacked and dropped after the softmax, so they never touch the real heads: zero
   gradient, no effect on the output, 62.6M dead parameters (N^2 per block) that the paper's 25.2M leaves
   out. *Darcet et al.*: R extra tokens appended to the ViT's sequence; they issue queries, are updated by
   every layer like the patch tokens, and are dropped at the output. iiANET has no token sequence that
   survives from one attention to the next (each MHSA branch works on its own C/8-channel slice of a conv
   feature map, at a width that changes from block to block), so Darcet's tokens would need a side stream
   the paper does not describe. *Here*: ``num_registers`` = R learned **key/value slots per head** in every
   global MHSA (``slot_k``, ``slot_v``: R x d each), appended to its keys and values. Every pixel query can
   put attention mass on them; they have no query, no position and no update across layers, and nothing of
   them is passed on. This is *persistent memory* (Sukhbaatar et al. 2019, "Augmenting self-attention with
   persistent memory") / a learned *attention sink*; we chose it because it is the nearest working mechanism
   that fits a block-local attention and costs only 2*R*c parameters per block (1,376 * R in the model).
4. **Position term.** Eq. 3 writes Q_i K^T + Q_i R, i.e. logits_ij = q_i.k_j + q_i.r_j (query content against
   key position), which is also BoTNet's q r^T. The code (from a BoTNet port) computes
   ``matmul(content_position.permute(...), q)``, i.e. logits_ij = q_i.k_j + r_i.q_j: the *query's position*
   against the *key's content*. With the same weights the two give different outputs. ``position_term=
   "paper"`` (default) or ``"code"``; the tests check the "code" form against a literal re-statement of the
   code's logits.
5. **ECA: ECA-Net's 1-D conv by default, a labelled choice.** The paper names ECANET (ECA-Net, Wang et al.
   2020) but describes "a 1x1 convolution ... performed on p" (the 1x1xC pooled vector), which is a dense
   C -> C map: exactly the code's ``Conv2d(C, C, 1, bias=False)`` (SE without a bottleneck). So the paper's
   text and the code agree with each other, and ECA-Net's 1-D conv over k neighbouring channels
   (adaptive k(C), ``eca_kernel_size``; k = 5 for every iiANET stage width) is *our* reading of the name.
   ``eca="dense"`` gives the paper's text / the code's operator (``DenseChannelGate``: C^2 weights per stage).
   Either sits after **every** stage (§3.2: "after each stage"; the code has it after stages 1-3 only; the
   abstract's "after each iiABlock" is contradicted by §3.2 and the code). Parameters: the code's 729,088
   dense-"ECA" weights become 20 ECA weights plus the 1x1/2 downsampling convs (C^2 + 2C for BN: 731,648).
6. **Attention is scaled by 1/sqrt(d)** as in Eqs. 2, 3 and 6; the code (like its BoTNet port) does not
   scale. Position embeddings start at N(0, d^-1/2) (BoTNet's official initialiser) instead of the code's
   N(0, 1), which with the unscaled logits would make the initial softmax almost one-hot.
7. **Fast path:** with the paper's term, q k^T + q r^T = q (k + r)^T exactly: we fold r into the keys and
   call ``F.scaled_dot_product_attention`` with no bias, and the slots are extra key/value rows. With the
   code's term, q_i.k_j + r_i.q_j = [q_i, r_i].[k_j, q_j]: SDPA on concatenated (2d-wide) queries and keys,
   the slots' keys padded with zeros. ``attn_impl="naive"`` keeps the explicit logits and softmax; the tests
   assert both agree (outputs and gradients).
8. **Any input size at construction.** The code only runs at 299 (its position and register tables are
   hard-coded for 73/36/18/9 maps). ``img_size`` sizes the position tables for any size; a different size
   at call time raises a ValueError. A ``width_mult`` option (not in the paper) scales every width, rounded
   so that the splits and heads stay exact, for CPU-sized experiments.
9. **Ecosystem.** The input check is a module-level function registered with ``torch.fx.wrap`` and every
   reshape uses static sizes, so every model in ``MODELS`` traces with torchvision's
   ``create_feature_extractor``, ``torch.export`` and ``torch.compile(fullgraph=True)`` (tested on every
   variant in a one-block-per-stage configuration; ``position_term="code"`` / ``eca="dense"`` included).

What the paper leaves open (and what we chose)
----------------------------------------------
* Per-block widths, where the stem stops, expansion factor, shortcuts: the paper gives none of them; we
  follow the code exactly. Block output widths 160,192 | 256,288,320 | 448,640,640,704,768 | 1024,1280;
  stem 32, 64. Each branch is ``ReLU(f(x_i) + shortcut(x_i))`` with a 1x1 conv+BN projection shortcut
  (code); the MHSA adds its input back inside (code, BoTNet port); MBConv's hidden width is 4x the branch
  *output* (code); the dilated branch is one 3x3 conv, dilation 2, + BN (code).
* Branch outputs keep the block's ratio (code: out_dil = out_mhsa = out_mb / 6). With ``ratio=(2, 4, 2)``
  (Table 5) both the input split and the output widths use 2:4:2; the block widths stay the code's.
* Table 4's ablations drop branches and keep the block widths and the C/8 unit of the split: a dropped
  branch's eighths go to MBConv ((a) 0:8:0, (b) 1:7:0, (e) 0:7:1), or, when MBConv is the one dropped,
  are shared equally by the other two ((d) 4:0:4). **They are not the same size** (299 px, 30 classes):
  (a) 42,508,882, (b) 33,429,202, (c) 25,311,714, (d) 16,094,226, (e) 33,099,426 parameters, because the
  MBConv branch (hidden width 4x its output) costs far more per channel than the other two. The paper gives
  no sizes for them, so its Table 4 compares models of 16M-43M parameters (if built this way).
* Table 5's "head size 8 -> 16" is read as doubling the number of heads of every stage (2/4/8/16, the last
  stage going from 8 to 16); "head size" could also mean the head width, which the paper never states.
  Table 5's 2:4:2 model has 15,176,882 parameters here (fewer than 1:6:1, for the same MBConv reason); the
  paper says it "increases computational cost" and gives no count.
* The downsampling "1x1 convolutional block" is conv + BN without an activation (every branch that reads
  it starts with a conv). Head: global average pool, dropout 0.4, Linear (code).
* The reported model (Table 2, 80.57% on AID) is the **0-register** row of Table 6, and in the code the
  registers are a no-op anyway, so ``iianet`` defaults to ``num_registers=0``; ``iianet_reg1/2/4`` add slots.

Parameters and MACs (299x299, 30 classes = AID; MACs per image, counted with torch's FlopCounterMode)
----------------------------------------------------------------------------------------------------
==========================  =========  ===========================================================
model                       paper      this file
==========================  =========  ===========================================================
iiANET parameters           25.2M      25,311,714 (+0.44%). The code without its dead registers:
                                       25,307,814 (+0.43%); with them: 87.9M. The 3,900 more here:
                                       position tables +1,320, BN of the 1x1/2 downsampling +2,560,
                                       ECA 20
iiANET, ``eca="dense"``     --         27,679,182 (dense C x C gate after all 4 stages)
iiANET "FLOPs"              8.22 G     8.72 GMACs inside Conv/Linear modules (the thop/ptflops
                                       convention, which is the paper's: it matches a counter that
                                       skips attention matmuls; the code gives 7.87 conv-only and
                                       8.41 with thop). All MACs: 11.77 G with the attention written
                                       as Eq. 3 (q k^T, q r^T, A V = 3.04 G), 10.75 G on the SDPA
                                       path (r folded into k saves the q r^T product)
+ slots (R per head)        --         + 1,376 * R parameters (Table 6: R = 1, 2, 4)
Table 4 (a)/(b)/(d)/(e)     --         42,508,882 / 33,429,202 / 16,094,226 / 33,099,426
Table 5 2:4:2 / heads x2    --         15,176,882 / 25,311,714
==========================  =========  ===========================================================
Our MACs are higher than the code's because of the 37/19/10 maps of the strided 1x1 downsampling (2.):
stages 3 and 4 hold 91% of the weights, and their maps have 11% and 23% more positions than the code's.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["IIANet", "IIABlock", "GlobalMHSA", "ECA", "DenseChannelGate", "eca_kernel_size", "split_channels",
           "attention_maps", "MODELS", "PAPER_PARAMS", "PAPER_GFLOPS"]

# Table 2: iiANET at 299x299 (AID, 30 classes): 25.2M parameters, 8.22 GFLOPs. The paper gives no sizes for
# the ablations of Tables 4-6 (this file's counts are in the module docstring and pinned by the tests).
PAPER_PARAMS = {"iianet": 25.2e6}
PAPER_GFLOPS = {"iianet": 8.22}

# The authors' code (iiANET.py): output width of every iiABlock, per stage, and the stem widths.
CODE_WIDTHS = ((160, 192), (256, 288, 320), (448, 640, 640, 704, 768), (1024, 1280))  # [paper silent: code]
CODE_STEM = (32, 64)                                                                    # [paper silent: code]
CODE_HEADS = (1, 2, 4, 8)
BRANCHES = ("dilated", "mbconv", "mhsa")


# --------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------
def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, padding: int = 0, dilation: int = 1,
            groups: int = 1, act: bool = False) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU): the unit every part of the code is built from."""
    layers = [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                        bias=False),
              nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def split_channels(c: int, ratio: Sequence[int]) -> tuple[int, ...]:
    """Split ``c`` channels in ``ratio`` (e.g. 1:6:1 -> c/8, 6c/8, c/8), exactly (§3.2 "iiABlock").

    A ratio entry of 0 drops that branch (Table 4's ablations)."""
    s = sum(ratio)
    if c % s:
        raise ValueError(f"cannot split {c} channels exactly in the ratio {tuple(ratio)} (sum {s}); "
                         f"use a width that is a multiple of {s}")
    return tuple(c // s * r for r in ratio)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size k = psi(C) = | log2(C) / gamma + b / gamma |_odd (Wang et al. 2020, Eq. 12).

    Rounding rule: ``|t|_odd`` is the *nearest odd number* to t = (log2 C + b) / gamma, ties (t an even
    integer) rounded up, i.e. k = 2 * floor(t / 2) + 1. This is exactly what timm computes
    (``int(t)``, then +1 if even) for every C >= 8; timm additionally never goes below 3, which only matters
    for C < 8 (where the paper's formula gives 1). The official ECA code never computes k (it is passed by
    hand). With gamma = 2, b = 1: C = 64 -> 3, 128 ... 1024 -> 5, 2048 -> 7; every iiANET stage width -> 5.
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    t = (math.log2(channels) + b) / gamma
    return 2 * math.floor(t / 2) + 1


class ECA(nn.Module):
    """Efficient Channel Attention (ECA-Net): y = sigmoid(conv1d_k(GAP(x))) over the channel axis; x * y.

    k parameters in all (no bias). [not in paper: the paper names ECANET but describes a 1x1 conv on the
    pooled vector, i.e. ``DenseChannelGate``; this 1-D form is ECA-Net's, our reading of the name.]"""

    def __init__(self, channels: int, k: Optional[int] = None):
        super().__init__()
        self.k = int(k if k is not None else eca_kernel_size(channels))
        self.conv = nn.Conv1d(1, 1, self.k, padding=(self.k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3))                                   # (B, C)   global average pool
        y = self.conv(y.unsqueeze(1)).squeeze(1)             # (B, 1, C) -> (B, C): 1-D conv over k channels
        y = torch.sigmoid(y)                                 # (B, C)   weights in (0, 1)
        return x * y[:, :, None, None]                       # (B, C, H, W)


class DenseChannelGate(nn.Module):
    """§3.2 as written, and the authors' code's "ECA": GAP -> 1x1 conv C -> C (no bias) -> sigmoid -> x * Z.

    A 1x1 convolution of the pooled 1x1xC vector is a dense C x C channel mixer (SE without a bottleneck):
    C^2 parameters. (Named differently from ``ECA`` on purpose: it is not ECA-Net's operator.)"""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.conv(x.mean((2, 3), keepdim=True)))  # (B, C, 1, 1)
        return x * z                                         # (B, C, H, W)


# --------------------------------------------------------------------------------------------------------
# The three branches
# --------------------------------------------------------------------------------------------------------
class DilatedBranch(nn.Module):
    """3x3 convolution with dilation 2 (a 5x5 receptive field for 3x3 weights) + BN (code: no activation;
    the branch wrapper adds the shortcut and applies the ReLU)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = conv_bn(c_in, c_out, 3, padding=2, dilation=2)   # [paper silent: BN, no act (code)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)                                  # (B, c_out, H, W)


class MBConvBranch(nn.Module):
    """MBConv2 (MobileNetV2 inverted bottleneck): 1x1 expand -> 3x3 depthwise (Eq. 1) -> 1x1 linear project.

    The code expands to 4x the branch *output* width (10x its input split), uses plain ReLU, no SE."""

    def __init__(self, c_in: int, c_out: int, expansion: int = 4):
        super().__init__()
        hidden = expansion * c_out                           # [paper silent: 4x the output width (code)]
        self.expand = conv_bn(c_in, hidden, 1, act=True)
        # Eq. 1: y_i = sum_{j in L(i)} w_{i-j} x_j over a 3x3 neighbourhood, one filter per channel.
        self.dw = conv_bn(hidden, hidden, 3, padding=1, groups=hidden, act=True)
        self.project = conv_bn(hidden, c_out, 1)             # linear bottleneck: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)                                   # (B, 4*c_out, H, W)
        x = self.dw(x)                                       # (B, 4*c_out, H, W)
        return self.project(x)                               # (B, c_out, H, W)


class GlobalMHSA(nn.Module):
    """Global 2-D multi-head self-attention with BoTNet content-position logits (+ optional key/value slots).

    Eq. 3: Z = softmax((q k^T + q r^T) / sqrt(d)) V over **all** N = H*W positions, where the position
    embedding of pixel j is r_j = rel_h[row(j)] + rel_w[col(j)] (one d-vector per row plus one per column, per
    head: BoTNet's factorised 2-D embedding, as in the code).

    ``position_term``: "paper" (default): logits_ij = q_i.k_j + q_i.r_j (Eq. 3, BoTNet); "code": the authors'
    code's q_i.k_j + r_i.q_j (see the module docstring, 4.).

    ``num_slots`` = R > 0 (the factories' ``num_registers``): each head also has R learned key/value slots
    (no query, no position, no update across layers; persistent memory, not Darcet et al.'s register tokens):
    the pixel queries attend over N + R keys.

    ``attn_impl``: "sdpa" (fast: one ``F.scaled_dot_product_attention`` call, no bias) or "naive" (the explicit
    logits and a softmax). ``keep_attn = True`` makes the forward take the naive path and store the attention
    weights, detached, in ``last_attn``: shape (B, h, N, N + R), softmax over the last axis (keys: the N
    pixels in row-major order, then the R slots). ``attention_maps(model, x)`` collects them for a whole model.
    """

    def __init__(self, dim: int, heads: int, size: tuple[int, int], num_slots: int = 0,
                 attn_impl: str = "sdpa", position_term: str = "paper"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the MHSA width {dim} is not divisible by heads={heads}; choose heads dividing "
                             f"{dim} or change the widths/ratio")
        if position_term not in ("paper", "code"):
            raise ValueError(f"position_term must be 'paper' (Eq. 3: q_i.r_j) or 'code' (the authors' code: "
                             f"r_i.q_j), got {position_term!r}")
        self.heads, self.d, self.size, self.num_slots = heads, dim // heads, tuple(size), num_slots
        self.attn_impl, self.position_term = attn_impl, position_term
        self.keep_attn = False
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)                # [paper silent: 1x1 convs with bias (code)]
        h_, w_ = self.size
        std = self.d ** -0.5                                 # [paper silent: BoTNet's init; the code: N(0, 1)]
        self.rel_h = nn.Parameter(torch.randn(heads, h_, 1, self.d) * std)   # (h, H, 1, d) one per row
        self.rel_w = nn.Parameter(torch.randn(heads, 1, w_, self.d) * std)   # (h, 1, W, d) one per column
        if num_slots:
            # [not in paper: learned key/value slots per head in place of the paper's registers (docstring 3.)]
            self.slot_k = nn.Parameter(torch.randn(heads, num_slots, self.d) * 0.02)  # (h, R, d) [paper silent: init]
            self.slot_v = nn.Parameter(torch.randn(heads, num_slots, self.d) * 0.02)  # (h, R, d)

    def no_weight_decay(self) -> set:
        """Parameter names an AdamW recipe leaves undecayed (timm's convention; common/train.py reads it)."""
        # [paper silent: tables of positions and slots are not decayed, as BoTNet/timm do for position tables]
        return {n for n in ("rel_h", "rel_w", "slot_k", "slot_v") if getattr(self, n, None) is not None}

    def position_embedding(self) -> torch.Tensor:
        """r of Eq. 3: (h, N, d), r[:, i*W + j] = rel_h[:, i] + rel_w[:, j]."""
        return (self.rel_h + self.rel_w).flatten(1, 2)       # (h, H, W, d) -> (h, N, d)

    def _qkv(self, x: torch.Tensor):
        qkv = self.qkv(x).flatten(2)                         # (B, 3C, N)
        qkv = qkv.unflatten(1, (3, self.heads, self.d))      # (B, 3, h, d, N)
        q, k, v = qkv.transpose(-1, -2).unbind(1)            # 3 x (B, h, N, d)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)                               # 3 x (B, h, N, d)
        r = self.position_embedding()                        # (h, N, d)
        if self.attn_impl == "naive" or self.keep_attn:
            out = self._naive(q, k, v, r)                    # (B, h, N, d)
        elif self.attn_impl == "sdpa":
            out = self._sdpa(q, k, v, r)                     # (B, h, N, d)
        else:
            raise ValueError(f"attn_impl must be 'sdpa' or 'naive', got {self.attn_impl!r}")
        out = out.transpose(-1, -2).flatten(1, 2)            # (B, h, d, N) -> (B, C, N)
        out = out.unflatten(2, self.size)                    # (B, C, H, W)
        return out + x                                       # [not in paper: inner identity residual (code)]

    def _sdpa(self, q, k, v, r):
        """Fast path, exact: the position term is folded into the queries/keys, no N x N bias is formed."""
        if self.position_term == "paper":
            k = k + r                                        # q.k^T + q.r^T = q.(k + r)^T   (B, h, N, d)
            slot_k = self.slot_k if self.num_slots else None
        else:
            # q_i.k_j + r_i.q_j = [q_i, r_i].[k_j, q_j]: concatenate along the head width.
            k = torch.cat([k, q], dim=-1)                    # (B, h, N, 2d)
            q = torch.cat([q, r.expand_as(q)], dim=-1)       # (B, h, N, 2d)
            # A slot has no query, so its position term is 0: its key is padded with zeros.
            slot_k = F.pad(self.slot_k, (0, self.d)) if self.num_slots else None   # (h, R, 2d)
        if self.num_slots:
            k = torch.cat([k, slot_k.expand(k.shape[0], -1, -1, -1)], dim=2)        # (B, h, N+R, d or 2d)
            v = torch.cat([v, self.slot_v.expand(v.shape[0], -1, -1, -1)], dim=2)   # (B, h, N+R, d)
        return F.scaled_dot_product_attention(q, k, v, scale=self.d ** -0.5)      # (B, h, N, d) Eq. 2 scale

    def _naive(self, q, k, v, r):
        """Eq. 3 written out: content-content + content-position logits, softmax, values."""
        logits = q @ k.transpose(-1, -2)                     # (B, h, N, N)  q_i . k_j  (content-content)
        if self.position_term == "paper":
            logits = logits + q @ r.transpose(-1, -2)        # (B, h, N, N)  + q_i . r_j (Eq. 3)
        else:
            logits = logits + r @ q.transpose(-1, -2)        # (B, h, N, N)  + r_i . q_j (the code)
        if self.num_slots:
            slot = q @ self.slot_k.transpose(-1, -2)         # (B, h, N, R)  q_i . slot key
            logits = torch.cat([logits, slot], dim=-1)       # (B, h, N, N+R)
            v = torch.cat([v, self.slot_v.expand(v.shape[0], -1, -1, -1)], dim=2)  # (B, h, N+R, d)
        attn = torch.softmax(logits * self.d ** -0.5, dim=-1)  # (B, h, N, N+R)  Eq. 3's 1/sqrt(d)
        if self.keep_attn:
            self.last_attn = attn.detach()                   # (B, h, N, N+R)
        return attn @ v                                      # (B, h, N, d); slot outputs never formed


class MHSABranch(nn.Module):
    """Global MHSA at the split width c, then a 1x1 conv + BN to the branch output width (code)."""

    def __init__(self, c_in: int, c_out: int, heads: int, size: tuple[int, int], num_slots: int = 0,
                 attn_impl: str = "sdpa", position_term: str = "paper"):
        super().__init__()
        self.mhsa = GlobalMHSA(c_in, heads, size, num_slots, attn_impl, position_term)
        self.proj = conv_bn(c_in, c_out, 1)                  # [paper silent: 1x1 conv + BN (code)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mhsa(x))                       # (B, c_in, H, W) -> (B, c_out, H, W)


class Branch(nn.Module):
    """The code's wrapper around every branch: ReLU(f(x) + shortcut(x)), shortcut = 1x1 conv + BN."""

    def __init__(self, body: nn.Module, c_in: int, c_out: int):
        super().__init__()
        self.body = body
        self.shortcut = conv_bn(c_in, c_out, 1)              # [not in paper: projection shortcut (code)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))       # (B, c_out, H, W) [paper silent: ReLU after + (code)]


class IIABlock(nn.Module):
    """§3.2 iiABlock: split C as (i, j, k) = ratio (1:6:1 -> C/8, 3C/4, C/8), run f1 = dilated conv,
    f2 = MBConv, f3 = global MHSA in parallel, concatenate [f1(x1), f2(x2), f3(x3)] (Fig. 3)."""

    def __init__(self, c_in: int, c_out: int, heads: int, size: tuple[int, int], ratio=(1, 6, 1),
                 num_slots: int = 0, attn_impl: str = "sdpa", position_term: str = "paper"):
        super().__init__()
        self.splits_in = split_channels(c_in, ratio)         # e.g. (c/8, 6c/8, c/8)
        self.splits_out = split_channels(c_out, ratio)       # [paper silent: the code keeps the ratio at the output]
        self.branches = nn.ModuleDict()
        for name, ci, co in zip(BRANCHES, self.splits_in, self.splits_out):
            if ci == 0:
                continue                                     # Table 4 ablation: this branch is absent
            if name == "dilated":
                body = DilatedBranch(ci, co)
            elif name == "mbconv":
                body = MBConvBranch(ci, co)
            else:
                body = MHSABranch(ci, co, heads, size, num_slots, attn_impl, position_term)
            self.branches[name] = Branch(body, ci, co)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, [c for c in self.splits_in if c], dim=1)  # (B, c_i, H, W) each
        outs = [branch(parts[i]) for i, branch in enumerate(self.branches.values())]  # indexed: FX-traceable
        return torch.cat(outs, dim=1)                        # (B, C_out, H, W)


# --------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------
def _pair(s) -> tuple[int, int]:
    if isinstance(s, int) and not isinstance(s, bool):
        return (s, s)
    if isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(v, int) for v in s):
        return (int(s[0]), int(s[1]))
    raise TypeError(f"img_size must be an int or a pair (H, W) of ints, got {s!r}")


def _conv_out(n: int, k: int, s: int, p: int = 0) -> int:
    return (n + 2 * p - k) // s + 1


def _scaled_widths(widths, stem, heads, ratio, mult: float):
    """Scale every width by ``mult``, rounded to the nearest multiple that keeps the split exact and the
    MHSA width of the *next* block divisible by its heads (multiples of sum(ratio) * heads_next)."""
    s = sum(ratio)

    def rnd(w, h_next):
        q = s * h_next
        return max(q, int(w * mult / q + 0.5) * q)

    new_stem = (max(8, int(stem[0] * mult / 8 + 0.5) * 8), rnd(stem[1], heads[0]))
    new = []
    for si, ws in enumerate(widths):
        row = []
        for bi, w in enumerate(ws):
            last_block = bi == len(ws) - 1
            h_next = heads[si] if not last_block else (heads[si + 1] if si + 1 < len(widths) else 1)
            row.append(rnd(w, h_next))
        new.append(tuple(row))
    return tuple(new), new_stem


def _check_images(x, img_size: tuple[int, int]):
    """Validate a batch of images; returns it unchanged. [not in paper: repository input checks]

    A module-level function registered with ``torch.fx.wrap`` (below) so that FX tracing
    (``create_feature_extractor``) records one call instead of tracing the Python ``if``s on shapes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (B, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise ValueError(f"expected a batch of images (B, 3, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 input channels (RGB), got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"expected float images, got dtype {x.dtype}; convert with x.float() / 255 and "
                        f"normalise (e.g. ImageNet mean/std)")
    if tuple(x.shape[2:]) != tuple(img_size):
        raise ValueError(f"this model was built for {img_size[0]}x{img_size[1]} inputs (its position tables "
                         f"are sized for it), got {x.shape[2]}x{x.shape[3]}; resize the images or rebuild "
                         f"with img_size={tuple(x.shape[2:])}")
    return x


torch.fx.wrap("_check_images")


class IIANet(nn.Module):
    """iiANET: stem -> 4 x [iiABlocks -> ECA (-> 1x1/2 downsample after stages 1-3)] -> GAP -> classifier.

    Args:
        num_classes: classifier outputs (AID: 30).
        img_size: input side (int) or (H, W); the position tables are sized from it, and only this size is
            accepted at call time.
        widths: output width of every iiABlock, per stage (default: the authors' code); depths follow from it.
        heads: heads of the global MHSA per stage (1/2/4/8).
        ratio: channel split (dilated, mbconv, mhsa), default (1, 6, 1); zeros drop branches (Table 4).
        num_registers: Table 6's knob, built as R learned key/value slots per head in every MHSA (not the
            paper's registers: see the module docstring, 3.).
        position_term: "paper" (Eq. 3: q_i.r_j) or "code" (the authors' code: r_i.q_j).
        eca: "1d" (ECA-Net's 1-D conv, our reading) or "dense" (the paper's text and the code: 1x1 conv C -> C).
        stem_pool: keep the code's 3x3/2 max-pool after the stem (see the module docstring, 1.).
        width_mult: scale every width (not in the paper; for small CPU experiments).
        drop_rate: dropout before the classifier (code: 0.4).
        attn_impl: "sdpa" or "naive" for every MHSA (the ``attn_impl`` attribute of each ``GlobalMHSA``).
    """

    def __init__(self, num_classes: int = 30, img_size=299, widths=CODE_WIDTHS, heads=CODE_HEADS,
                 ratio=(1, 6, 1), num_registers: int = 0, stem_pool: bool = True, width_mult: float = 1.0,
                 stem_widths=CODE_STEM, drop_rate: float = 0.4, attn_impl: str = "sdpa",
                 position_term: str = "paper", eca: str = "1d"):
        super().__init__()
        self.img_size = _pair(img_size)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"num_registers must be an int >= 0 (Table 6 uses 0, 1, 2, 4), got {num_registers!r}")
        if eca not in ("1d", "dense"):
            raise ValueError(f"eca must be '1d' (ECA-Net's 1-D conv) or 'dense' (the paper's 1x1 conv C -> C, "
                             f"as in the authors' code), got {eca!r}")
        if attn_impl not in ("sdpa", "naive"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'naive', got {attn_impl!r}")
        ratio = tuple(ratio)
        if len(ratio) != 3 or any((not isinstance(r, int)) or r < 0 for r in ratio) or not any(ratio):
            raise ValueError(f"ratio must be three ints >= 0 (dilated, mbconv, mhsa), not all 0, got {ratio!r}")
        widths = tuple(tuple(w) for w in widths)
        heads = tuple(heads)
        if len(heads) != len(widths):
            raise ValueError(f"need one head count per stage: {len(widths)} stages, heads={heads}")
        if width_mult != 1.0:                                # [not in paper: CPU-sized experiments]
            widths, stem_widths = _scaled_widths(widths, stem_widths, heads, ratio, width_mult)
        self.widths, self.heads, self.ratio, self.num_registers = widths, heads, ratio, num_registers
        self.num_classes = num_classes

        # Spatial sizes through the network (the code's unpadded stem convs, its max-pool, 1x1/2 downsampling).
        h, w = self.img_size
        h, w = _conv_out(h, 3, 2), _conv_out(w, 3, 2)       # stem conv a, stride 2
        h, w = h - 2, w - 2                                  # stem conv b, unpadded
        if stem_pool:
            h, w = _conv_out(h, 3, 2), _conv_out(w, 3, 2)   # the code's 3x3/2 max-pool
        if min(h, w) < 1:
            raise ValueError(f"img_size={img_size} is too small for the stem; use at least 16 pixels")
        sizes = []
        for si in range(len(widths)):
            sizes.append((h, w))
            if si < len(widths) - 1:
                h, w = _conv_out(h, 1, 2), _conv_out(w, 1, 2)  # 1x1 conv, stride 2
        self.stage_sizes = tuple(sizes)

        # Stem (§3.2): two 3x3 conv + BN + ReLU, the first with stride 2 ([paper silent: unpadded (code)]).
        stem = [conv_bn(3, stem_widths[0], 3, stride=2, act=True), conv_bn(stem_widths[0], stem_widths[1], 3, act=True)]
        if stem_pool:
            stem.append(nn.MaxPool2d(3, 2))                  # [not in paper: the code's 3x3/2 max-pool]
        self.stem = nn.Sequential(*stem)

        self.stages, self.ecas, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = stem_widths[1]
        for si, ws in enumerate(widths):
            blocks = []
            for co in ws:
                blocks.append(IIABlock(c, co, heads[si], sizes[si], ratio, num_registers, attn_impl, position_term))
                c = co
            self.stages.append(nn.Sequential(*blocks))
            self.ecas.append(ECA(c) if eca == "1d" else DenseChannelGate(c))  # §3.2: "after each stage"
            if si < len(widths) - 1:
                # §3.2: "1x1 convolutional block with stride 2" [paper silent: conv + BN, no activation]
                self.downsample.append(conv_bn(c, c, 1, stride=2))
        self.num_features = c
        self.head_drop = nn.Dropout(drop_rate)               # [paper silent: dropout 0.4 (code)]
        self.fc = nn.Linear(c, num_classes)

    # -- forward -------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the pooling: the stage-4 feature map after its ECA, (B, C_last, h, w)
        (1280 x 10 x 10 at 299). Grad-CAM (Figs. 1, 4) uses this map."""
        x = _check_images(x, self.img_size)                  # (B, 3, H, W)
        x = self.stem(x)                                     # (B, 64, H/4, W/4)  73x73 at 299
        for si, stage in enumerate(self.stages):
            x = stage(x)                                     # (B, C_s, h_s, w_s)
            x = self.ecas[si](x)                             # (B, C_s, h_s, w_s)
            if si < len(self.downsample):
                x = self.downsample[si](x)                   # (B, C_s, ceil(h_s/2), ceil(w_s/2))
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        x = features.mean((2, 3))                            # (B, C_last)  GAP [paper silent: code's AvgPool2d(9)]
        return self.fc(self.head_drop(x))                    # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def attention_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every attention map of ``model`` on ``x``: {qualified module name: (B, h, N, N + R) weights}.

    Sets ``keep_attn`` on every module that has it, runs ``model(x)`` under ``torch.no_grad()``, collects
    ``last_attn``, then restores the flags and deletes ``last_attn``. [not in paper: repository convention]"""
    mods = {name: m for name, m in model.named_modules() if hasattr(m, "keep_attn")}
    flags = {name: m.keep_attn for name, m in mods.items()}
    try:
        for m in mods.values():
            m.keep_attn = True
        with torch.no_grad():
            model(x)
        return {name: m.last_attn for name, m in mods.items()}
    finally:
        for name, m in mods.items():
            m.keep_attn = flags[name]
            m.__dict__.pop("last_attn", None)


# --------------------------------------------------------------------------------------------------------
# Factories (Table 2 model, Table 4 ablations, Table 5, Table 6)
# --------------------------------------------------------------------------------------------------------
def iianet(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """The paper's model (Table 2): 1:6:1, heads 1/2/4/8, 0 registers (Table 6's 80.57% row). 25,311,714
    parameters at 299 px / 30 classes (paper: 25.2M)."""
    return IIANet(num_classes=num_classes, img_size=img_size, **kwargs)


def iianet_a_mbconv(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 4 (a): MBConv only (every channel goes to the MBConv branch: ratio 0:8:0). 42,508,882 parameters
    at 299 px / 30 classes: 1.68x the full model's."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"ratio": (0, 8, 0), **kwargs})


def iianet_b_mbconv_dilated(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 4 (b): dilated conv + MBConv, no MHSA (ratio 1:7:0: the MHSA's eighth goes to MBConv).
    33,429,202 parameters at 299 px / 30 classes."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"ratio": (1, 7, 0), **kwargs})


def iianet_c_full(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 4 (c): all three branches: the same model as ``iianet`` (25,311,714 parameters)."""
    return IIANet(num_classes=num_classes, img_size=img_size, **kwargs)


def iianet_d_dilated_mhsa(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 4 (d): dilated conv + MHSA, no MBConv (ratio 4:0:4: MBConv's six eighths shared equally).
    16,094,226 parameters at 299 px / 30 classes."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"ratio": (4, 0, 4), **kwargs})


def iianet_e_mbconv_mhsa(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 4 (e): MBConv + MHSA, no dilated conv (ratio 0:7:1: the dilated eighth goes to MBConv).
    33,099,426 parameters at 299 px / 30 classes."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"ratio": (0, 7, 1), **kwargs})


def iianet_ratio242(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 5: channel ratio 2:4:2 instead of 1:6:1 (15,176,882 parameters at 299 px / 30 classes)."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"ratio": (2, 4, 2), **kwargs})


def iianet_heads16(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 5: "head size 8 -> 16", read as twice the heads in every stage (2/4/8/16); same parameters."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"heads": (2, 4, 8, 16), **kwargs})


def iianet_reg1(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 6: "1 register", built as 1 learned key/value slot per head in every global MHSA."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"num_registers": 1, **kwargs})


def iianet_reg2(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 6: "2 registers" (2 key/value slots per head)."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"num_registers": 2, **kwargs})


def iianet_reg4(num_classes: int = 30, img_size=299, **kwargs) -> IIANet:
    """Table 6: "4 registers" (4 key/value slots per head; the paper's best row, 80.77%)."""
    return IIANet(num_classes=num_classes, img_size=img_size, **{"num_registers": 4, **kwargs})


MODELS = {
    "iianet": iianet,
    "iianet_a_mbconv": iianet_a_mbconv,
    "iianet_b_mbconv_dilated": iianet_b_mbconv_dilated,
    "iianet_c_full": iianet_c_full,
    "iianet_d_dilated_mhsa": iianet_d_dilated_mhsa,
    "iianet_e_mbconv_mhsa": iianet_e_mbconv_mhsa,
    "iianet_ratio242": iianet_ratio242,
    "iianet_heads16": iianet_heads16,
    "iianet_reg1": iianet_reg1,
    "iianet_reg2": iianet_reg2,
    "iianet_reg4": iianet_reg4,
}

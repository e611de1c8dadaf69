"""LKCA: attention as one large-kernel convolution, in a small-dataset ViT.

Paper: Chenghao Li, Chaoning Zhang, Boheng Zeng, Yi Lu, Pengbo Shi, Qingzi Chen, Jirui Liu, Lingyun Zhu,
Yang Yang, Heng Tao Shen, "Interpreting and Improving Attention From the Perspective of Large Kernel
Convolution" (arXiv 2401.05738; first version titled "LKCA: Large Kernel Convolutional Attention").
Authors' code: github.com/CatworldLee/LKCA (now "LKCA-MiniViTsTrainer-Pytorch-CIFAR-TinyImageNet").

The idea
--------
Self-attention mixes the N tokens of a ViT with an N x N matrix computed from the input (softmax(QK^T)).
LKCA throws Q, K and the softmax away and keeps one *learned* table w of size (2s-1) x (2s-1), where
s = sqrt(N) is the number of tokens per side. Two views of the same operator (Fig. 1):

* **convolution view** (Algorithm 2): treat every channel of V as an s x s image and cross-correlate it
  with the single kernel w, zero padding s-1. Because the kernel is almost twice the size of the image,
  every output token sees every input token: a *global* convolution, translation-equivariant by design.
* **attention view** (Algorithm 1): slide an s x s window over w; the window for query token (i, j)
  starts at (s-1-i, s-1-j) and, flattened, is row (i, j) of an N x N "attention map" T:

      T[(i, j), (a, b)] = w[a - i + s - 1, b - j + s - 1]              (block-Toeplitz, Toeplitz blocks)

  and LKCA(V) = T @ V (Algorithm 1 line 14: one (N, N) map, broadcast over the batch). T depends only on
  the offset between two tokens, never on their content: it is attention with a static, shift-invariant,
  parameter-shared score matrix (K^2 = (2s-1)^2 parameters instead of 2 D^2 for Q and K).

Algorithm 1 is already a single matrix product T @ V. What this file adds to it is (a) building T with one
gather from precomputed indices instead of the authors' Python double loop, and (b) a default `view="gemm"`
that runs the product as a batched `torch.bmm` over the B images, with T expanded (batch stride 0, no copy)
and all C channels as the GEMM's columns. It is the same T @ V (tests assert equal outputs and gradients), and
on the CPU it was the fastest of the three (numbers under "Speed" below).

Section / equation map
----------------------
    §III-B1, Algorithm 1 lines 5-13 (build T)    -> toeplitz_index(), LKCA.toeplitz()
    §III-B1, Algorithm 1 line 14 (T @ V)         -> LKCA.mix(view="attention"), and the keep_attn path
    §III-B2, Algorithm 2 (convolution view)      -> LKCA.mix(view="conv")
    (this file) batched-bmm form of T @ V         -> LKCA.mix(view="gemm")  (default)
    §III-B3 Eq. 1-2, patch embedding E, E_pos     -> ViT.patch_embed, ViT.pos_embed
    §III-B3 Eq. 3-4, "LN before each module"     -> Block
    §III-B3 Eq. 5, GAP then LN                   -> ViT.forward_head(pool="mean")
    Tables I-V (ViT / ViT-LKCA sizes)            -> CONFIGS, MODELS, PAPER_PARAMS
    baseline ViT [1] (SPT_LSA_ViT code)          -> Attention (MHSA), ViT(pool="cls")
    (repository convention) attention maps       -> keep_attn / last_attn, attention_maps()

What differs from the paper or the authors' code, and why
---------------------------------------------------------
1. **LKCA in every block.** §III-B3 says LKCA modules are "interspersed" while "retaining the
   self-attention modules", but the authors' code (and every parameter count in Tables I-V) uses LKCA in
   every block. We follow the code; `mixer=` also accepts a per-block list such as
   ``["lkca", "attention"] * 5`` if you want to try the interleaving the text describes.
2. **No unused class token.** The authors' LKCA model creates a `cls_token` parameter it never uses (it
   still adds D to their counts); we leave it out (every parameter here gets a gradient). Our counts are
   therefore exactly the code's minus D (D = 100..360); tests/test_lkca.py pins both.
3. **Kernel stored as (K, K)** instead of the code's (1, 1, K, K) `dynamicqk`; same values.
4. **Kernel initialisation: zeros.** §III-B1's prose initialises the kernel "akin to the initialization of
   convolutional kernels", while Algorithms 1 and 2 (line 3: "weight <- zero tensor") and the authors' code
   use zeros. We follow the algorithms and the code. Consequence: at initialisation T = 0, LKCA outputs only
   to_out's bias (no token is mixed with any other), and to_v's first gradient is exactly zero.
5. **T is built with one gather** from precomputed indices instead of the code's Python double loop
   (`expand_window`, hard-wired to `.to('cuda')`): the same matrix (tests compare with the loop), no loop
   at run time.
6. **Default view "gemm"** (not in the paper): the batched `bmm` form of T @ V described above. The paper's
   two views stay selectable (`view="attention"`, `view="conv"`, or `ViT.set_view`).
7. **Baseline MHSA** runs through `F.scaled_dot_product_attention` by default (`Attention.fused=True`);
   the naive softmax(QK^T/sqrt(d))V path is kept next to it and tested equal.
8. **Stochastic depth**: the code shares one DropPath module (rate 0.1) across all blocks; we give every
   block its own DropPath with the same constant rate (identical behaviour, clearer code).
9. **Repository plumbing** (marked at the line): input checks (`check_images`, `check_tokens`, registered
   with `torch.fx.wrap` so FX tracing records them as calls), `keep_attn`/`last_attn` and
   `attention_maps()` (the repository's convention for attention-like maps), `set_view`. `LKCA.mix` is a
   separate method because `common/kernels/accelerate.py` swaps exactly that method for a Triton kernel.

What the paper leaves open (taken from the authors' code, `models/create_model.py`, `largevit_cnn.py`)
----------------------------------------------------------------------------------------------------
* Patch size: 4 for 32 px, 8 for 64 px (always an 8 x 8 grid, so K = 15); here ``patch_size`` defaults to
  ``img_size // 8`` which reproduces both, and any size that divides into a square grid works.
* Linear patch embedding (p x p x 3 -> D, no norm), learned position embedding N(0, 1) of shape (1, N, D),
  Xavier-normal Linear weights with zero biases, MLP = Linear-GELU-Linear, head = LayerNorm -> Linear.
* LKCA: `to_v` Linear(D, D) without bias, the (2s-1)^2 kernel, `to_out` Linear(D, D) with bias.
* Baseline ViT: class token, position embedding of length N+1, `to_qkv` without bias, head on the class
  token (SPT_LSA_ViT's `vit`: depth 9, D 192, 12 heads x 16, MLP 384 = "ViT-Small" 2.69M).
* `heads` / `dim_head` of the LKCA configs only set V's width heads * dim_head (= D in every config): the
  LKCA operator has no heads (one T for all channels), neither in Algorithm 1 nor in the authors' code.

Parameter counts (``PAPER_PARAMS``; ours from ``count_params``, pinned exactly in tests/test_lkca.py)
---------------------------------------------------------------------------------------------------
    variant          depth  D    heads x d  MLP   paper (CIFAR-10, 32 px)   ours     authors' code (= ours + D)
    vit                9   192   12 x 16   384         2.69M               2,692,426  2,692,426 (uses its cls)
    vit_05m            4   120    4 x 30   240         0.48M                 479,890    479,890
    vit_1m             7   136    8 x 17   272         1.06M               1,060,674  1,060,674
    vit_2m             6   200    8 x 25   400         1.96M               1,955,010  1,955,010
    vit_4m             7   264    8 x 33   528         3.95M               3,951,298  3,951,298
    vit_8m            10   312    8 x 39   624         7.85M               7,852,114  7,852,114
    vit_05m_lkca       8   100    4 x 25   200         0.50M                 500,710    500,810
    vit_1m_lkca (T)    9   136    8 x 17   272         1.03M               1,027,611  1,027,747
    vit_2m_lkca        9   192   12 x 16   384         2.03M               2,030,515  2,030,707
    vit_lkca (B)      10   210   10 x 21   420         2.69M               2,691,310  2,691,520
    vit_4m_lkca       11   246    6 x 41   492         4.05M               4,048,939  4,049,185
    vit_8m_lkca       14   306    6 x 51   612         7.98M               7,941,106  7,941,412
    vit_12m_lkca (L)  12   360    8 x 45  1080           -                12,528,190 12,528,550
  Tiny-ImageNet (64 px, patch 8, 200 classes), Table V: LKCA-T 1.07M -> 1,073,225; LKCA-B 2.76M -> 2,761,640;
  LKCA-L 12.65M -> 12,648,620; ViT-Small 2.76M -> 2,756,744.
  (The "authors' code" column is ours + D for the LKCA models; it agrees with the counts of the authors' code
  recorded to 1,000 parameters. The paper's 7.98M for ViT/8M-LKCA is 0.5% above the code's 7.94M; every
  other count agrees to 0.3%.)

MACs
----
The paper's "Flops" (e.g. 170.81M for ViT-LKCA, 174.25M for ViT) come from ptflops, which sees only
``nn.Linear`` layers: it misses the functional large-kernel conv and the attention matmuls. Use
``common.flops.count_macs(model)["layers"]`` for that convention (LKCA-B: 170.0M). ``["total"]`` counts
everything that runs and therefore **depends on the LKCA view**: LKCA-B 178.6M with the "gemm" or
"attention" view (N^2 MACs per channel) and 200.2M with the "conv" view (N * K^2 per channel: the
convolution also multiplies the zero padding).

Speed (measured on the 2-core CPU this repository is developed on; LKCA-B's mixing, N = 64, C = 210)
----------------------------------------------------------------------------------------------------
Median CPU time of LKCA.mix per call (one thread, torch 2.14, forward / forward+backward, measured with
time.thread_time so that other work on the shared machine does not count):

    batch   conv (Alg. 2)        attention (Alg. 1, T @ V)   gemm (bmm, default)
     64     43.0 / 388.0 ms      5.22 / 9.03 ms              2.08 / 5.64 ms
    256    161.3 / 1556 ms      14.5 / 38.0 ms               6.76 / 21.4 ms

So on this CPU the gemm view is 21-24x faster than the convolution view forward and 69-73x forward+backward,
and 2.2-2.5x (forward) / 1.6-1.8x (forward+backward) faster than `T @ V` (torch.matmul of a 2-D by a 3-D
tensor, which takes a different internal route). On a GPU none of this was measured here; the notebook times
the three views on whatever device it runs on. The Triton kernel in common/kernels is a further option.

Ecosystem
---------
Every model in MODELS traces with `torchvision.models.feature_extraction.create_feature_extractor`, exports
with `torch.export.export` and compiles with `torch.compile(fullgraph=True)` (tests marked `compile`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

VIEWS = ("gemm", "attention", "conv")


# ----------------------------------------------------------------------------------------------------------
# Input checks ([not in paper: repository plumbing]). Registered with torch.fx.wrap so that FX tracing
# (create_feature_extractor) records them as calls instead of evaluating Python `if`s on traced shapes.
# ----------------------------------------------------------------------------------------------------------
def check_images(x, img_size: Optional[int] = None, in_chans: int = 3) -> None:
    """Raise a clear error for inputs that are not a float batch of (B, 3, H, W) images of the right size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (B, {in_chans}, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise ValueError(f"expected a batch of images (B, {in_chans}, H, W), got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"expected float images, got dtype {x.dtype}; convert with x.float() / 255 and "
                        "normalise them as during training")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} colour channels (B, {in_chans}, H, W), got {x.shape[1]} channels "
                         f"in shape {tuple(x.shape)}" + ("; repeat a grey channel with x.expand(-1, 3, -1, -1)"
                                                         if x.shape[1] == 1 else ""))
    if img_size is not None and tuple(x.shape[-2:]) != (img_size, img_size):
        raise ValueError(f"this model was built for {img_size}x{img_size} images (its position embedding and "
                         f"LKCA kernels are sized for that grid), got {x.shape[-2]}x{x.shape[-1]}; resize the "
                         f"images, or rebuild the model with img_size={x.shape[-1]}")


def check_tokens(v, grid: int) -> None:
    """Raise a clear error unless v is a (B, N, C) batch of tokens with N = grid * grid."""
    if not isinstance(v, torch.Tensor) or v.ndim != 3 or v.shape[1] != grid * grid:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"LKCA was built for a {grid}x{grid} grid: expected tokens (B, {grid * grid}, C), got "
                         f"{got}; rebuild it with grid=sqrt(N) for another token count")


torch.fx.wrap("check_images")
torch.fx.wrap("check_tokens")
torch.fx.wrap("rearrange")  # einops cannot take FX proxies; FX records each rearrange as one call instead


# ----------------------------------------------------------------------------------------------------------
# The LKCA token mixer (§III-B)
# ----------------------------------------------------------------------------------------------------------
def toeplitz_index(s: int) -> torch.Tensor:
    """Indices into the flattened (2s-1) x (2s-1) kernel that unroll it into the N x N matrix T (N = s*s).

    T[(i, j), (a, b)] = w[a - i + s - 1, b - j + s - 1]: row (i, j) is the s x s window of w that starts at
    (s-1-i, s-1-j), flattened row-wise: exactly Algorithm 1's sliding window (lines 5-13), without a loop.
    """
    K = 2 * s - 1
    i = torch.arange(s).view(s, 1, 1, 1)          # query row       (s, 1, 1, 1)
    j = torch.arange(s).view(1, s, 1, 1)          # query column    (1, s, 1, 1)
    a = torch.arange(s).view(1, 1, s, 1)          # key row         (1, 1, s, 1)
    b = torch.arange(s).view(1, 1, 1, s)          # key column      (1, 1, 1, s)
    idx = (a - i + s - 1) * K + (b - j + s - 1)   # (s, s, s, s): offset (key - query) into w
    return idx.reshape(s * s, s * s)              # (N, N)


class LKCA(nn.Module):
    """Large Kernel Convolutional Attention: V = to_v(x); V <- T @ V = w (*) V (one shared kernel); to_out(V).

    Args:
        dim: token width D.
        grid: s, tokens per side (N = s * s); the kernel is (2s-1) x (2s-1).
        inner_dim: width C of V (the code's heads * dim_head; always = dim in the paper's configs).
        dropout: after `to_out` (0 in every config of the paper).
        view: how T @ V is computed; all three give the same result (tests assert outputs and gradients):
            "attention" (Algorithm 1: T (N, N) @ V (B, N, C), broadcast over the batch),
            "conv" (Algorithm 2: one single-channel convolution per image and channel),
            "gemm" (default, not in the paper: torch.bmm over the B images with T expanded, no copy).

    Attention map: with `keep_attn = True` the forward takes the attention view and stores T, detached, in
    `self.last_attn`, shape (N, N): one map for every image and channel.
    """

    def __init__(self, dim: int, grid: int, inner_dim: Optional[int] = None, dropout: float = 0.0,
                 view: str = "gemm"):
        super().__init__()
        inner_dim = inner_dim or dim
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        self.grid, self.view = grid, view                               # [not in paper: view selector]
        K = 2 * grid - 1
        self.to_v = nn.Linear(dim, inner_dim, bias=False)              # Alg. 1/2 line 4; [paper silent: no bias (code)]
        # Algorithm 1/2, line 3: "weight <- zero tensor of shape (2H-1, 2W-1)" (the code agrees; §III-B1's
        # prose says "akin to the initialization of convolutional kernels": we follow the algorithms).
        self.kernel = nn.Parameter(torch.zeros(K, K))                   # (K, K)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))  # [paper silent: code's to_out]
        # [not in paper: precomputed gather indices for T] Not persistent: derived from `grid`, so
        # state_dicts hold only the kernel (and stay loadable).
        self.register_buffer("index", toeplitz_index(grid), persistent=False)  # (N, N)
        self.keep_attn = False                                          # [not in paper: repository convention]
        self.last_attn: Optional[torch.Tensor] = None

    def toeplitz(self) -> torch.Tensor:
        """The N x N "attention map" T of Algorithm 1 (one gather; differentiable w.r.t. the kernel)."""
        return self.kernel.flatten()[self.index]                        # (K*K,) -> (N, N)

    # `mix` is its own method because common/kernels/accelerate.py swaps exactly this method for a Triton kernel.
    def mix(self, v: torch.Tensor) -> torch.Tensor:
        """The shared-kernel mixing of tokens: (B, N, C) -> (B, N, C), out[b, n] = sum_m T[n, m] v[b, m]."""
        check_tokens(v, self.grid)                                      # [not in paper: input check]
        if self.view == "conv":
            # Algorithm 2: every channel of every image is a separate s x s single-channel image.
            s = self.grid
            x = rearrange(v, "b (h w) c -> (b c) 1 h w", h=s)           # Alg. 2 line 5: (B*C, 1, s, s)
            x = F.conv2d(x, self.kernel[None, None], padding=s - 1)     # line 6: (B*C, 1, s, s), global cross-corr.
            return rearrange(x, "(b c) 1 h w -> b (h w) c", b=v.shape[0])  # line 7: (B, N, C)
        T = self.toeplitz().to(v.dtype)                                 # (N, N)
        if self.view == "attention":
            return T @ v                                                # Alg. 1 line 14: (N, N) @ (B, N, C) -> (B, N, C)
        # "gemm" [not in paper]: the same product as a batched GEMM over the B images; T.expand copies
        # nothing (batch stride 0). Measured faster on CPU than T @ v (see the module docstring).
        return torch.bmm(T.expand(v.shape[0], -1, -1), v)               # (B, N, N) @ (B, N, C) -> (B, N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.to_v(x)                                                # (B, N, C)
        if self.keep_attn:                                              # [not in paper: repository convention]
            check_tokens(v, self.grid)                                  # [not in paper: input check]
            T = self.toeplitz()                                         # (N, N)
            self.last_attn = T.detach()
            return self.to_out(T.to(v.dtype) @ v)                       # the attention view, (B, N, D)
        return self.to_out(self.mix(v))                                 # (B, N, D)


# ----------------------------------------------------------------------------------------------------------
# The baseline ViT's multi-head self-attention (ViT [1], as in the authors' models/vit.py)
# ----------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention as in the baseline ViT (to_qkv without bias, to_out with bias).

    `fused=True` uses F.scaled_dot_product_attention; `fused=False` the naive softmax(QK^T / sqrt(d)) V.
    Attention map: with `keep_attn = True` the forward takes the naive path and stores the softmax map,
    detached, in `self.last_attn`, shape (B, h, N, N) (N includes the class token).
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.fused = True                                               # [not in paper: fast path]
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.keep_attn = False                                          # [not in paper: repository convention]
        self.last_attn: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)  # (3, B, h, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]                                             # (B, h, N, d) each
        if self.fused and not self.keep_attn:
            out = F.scaled_dot_product_attention(q, k, v)                            # (B, h, N, d)
        else:
            attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)            # (B, h, N, N)
            if self.keep_attn:
                self.last_attn = attn.detach()
            out = attn @ v                                                           # (B, h, N, d)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))                   # (B, N, D)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (train mode only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty_like(x[:, :1, :1]).bernoulli_(1 - self.p)  # (B, 1, 1): one coin per sample
        return x * keep / (1 - self.p)                                # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block (§III-B3 Eq. 3-4): z' = z + mixer(LN z), then z' + MLP(LN z')."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_dim: int, dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim), mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),  # [paper silent: GELU (code)]
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        self.drop_path = DropPath(drop_path)                           # [paper silent: stochastic depth (code)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))              # Eq. 3: (B, N, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))             # Eq. 4: (B, N, D)


# ----------------------------------------------------------------------------------------------------------
# The small-dataset ViT with either token mixer
# ----------------------------------------------------------------------------------------------------------
class ViT(nn.Module):
    """The small-dataset ViT of the LKCA paper: patch embedding -> + position embedding -> pre-norm blocks
    (each with an LKCA or MHSA token mixer) -> pooling (mean over tokens, or the class token) -> LN -> Linear.

    Args:
        img_size: input side; must be divisible by `patch_size`, giving an s x s grid.
        patch_size: default img_size // 8 (the authors' 4 at 32 px, 8 at 64 px: an 8 x 8 grid).
        heads, dim_head: the MHSA layout; for LKCA they only set V's width heads * dim_head (LKCA has no heads).
        mixer: "lkca" or "attention", or a list with one of those per block.
        pool: "mean" (GAP, the LKCA models) or "cls" (class token, the baseline ViTs). Default: "mean" if any
            block uses LKCA, else "cls".
        view: the LKCA view ("gemm", "attention", "conv"); see `LKCA`. Change later with `set_view`.
        drop_path: stochastic-depth rate, the same in every block ([paper silent: 0.1 in the authors' code]).
    """

    def __init__(self, img_size: int = 32, patch_size: Optional[int] = None, num_classes: int = 10, dim: int = 192,
                 depth: int = 9, heads: int = 12, dim_head: int = 16, mlp_dim: int = 384,
                 mixer: Union[str, Sequence[str]] = "lkca", pool: Optional[str] = None, dropout: float = 0.0,
                 emb_dropout: float = 0.0, drop_path: float = 0.1, view: str = "gemm", in_chans: int = 3):
        super().__init__()
        if patch_size is None:
            if img_size % 8:
                raise ValueError(f"img_size {img_size} is not divisible by 8: pass patch_size explicitly "
                                 "(img_size must be a multiple of it)")
            patch_size = img_size // 8                                  # [paper silent: code's 4 @ 32 px, 8 @ 64 px]
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size} (square grid)")
        mixers = [mixer] * depth if isinstance(mixer, str) else list(mixer)  # [not in paper: per-block list]
        if len(mixers) != depth or not set(mixers) <= {"lkca", "attention"}:
            raise ValueError(f"mixer must be 'lkca', 'attention' or a list of those of length depth={depth}, "
                             f"got {mixer!r}")
        pool = pool or ("mean" if "lkca" in mixers else "cls")
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid = s = img_size // patch_size
        self.num_classes, self.pool, self.dim = num_classes, pool, dim
        inner = heads * dim_head

        # §III-B3 Eq. 1: "the patches are linearly projected by weight matrix E to a D-dimensional space".
        # (The patches are cut in forward_features, with the authors' einops pattern.)
        self.patch_embed = nn.Linear(patch_size * patch_size * in_chans, dim)  # E: p*p*3 -> D
        n_pos = s * s + (1 if pool == "cls" else 0)
        self.pos_embed = nn.Parameter(torch.randn(1, n_pos, dim))        # Eq. 2 E_pos; [paper silent: N(0, 1) (code)]
        # The baseline ViT's class token; the LKCA models have none ("we discard the use of the [class] token").
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim)) if pool == "cls" else None
        self.emb_drop = nn.Dropout(emb_dropout)                          # [paper silent: code's emb_dropout (0)]

        def make_mixer(kind: str) -> nn.Module:
            if kind == "lkca":
                return LKCA(dim, s, inner, dropout=dropout, view=view)
            return Attention(dim, heads, dim_head, dropout)

        self.blocks = nn.ModuleList(Block(dim, make_mixer(m), mlp_dim, dropout, drop_path) for m in mixers)
        self.norm = nn.LayerNorm(dim)                                    # Eq. 5: y = LN(mean z_L)
        self.head = nn.Linear(dim, num_classes)                          # [paper silent: Linear classifier (code)]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):                                     # [paper silent: the code's init_weights]
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set:
        """Parameter names an AdamW recipe leaves undecayed (timm's convention; common/train.py reads it)."""
        # [paper silent: the recipe gives AdamW wd 5e-2 only; like DeiT/timm, tables are not decayed]
        return {n for n in ("pos_embed", "cls_token") if getattr(self, n, None) is not None}

    def set_view(self, view: str) -> "ViT":
        """Switch every LKCA layer to another (equivalent) view: "gemm", "attention" or "conv"."""
        # [not in paper: convenience for comparing the views on a whole model]
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        for m in self.modules():
            if isinstance(m, LKCA):
                m.view = view
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> token features after the last block: (B, N, D), or (B, 1 + N, D) with the
        class token first when pool == "cls"."""
        check_images(x, self.img_size, self.in_chans)                    # [not in paper: input check]
        p = self.patch_size
        x = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)  # (B, N, p*p*3), row-wise patches
        x = self.patch_embed(x)                                          # Eq. 1 x_p E: (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        x = self.emb_drop(x + self.pos_embed)                            # Eq. 1 "+ E_pos": (B, N(+1), D)
        for blk in self.blocks:
            x = blk(x)                                                   # Eq. 3-4: (B, N(+1), D)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Token features (B, N(+1), D) -> logits (B, classes): GAP over tokens (LKCA) or the class token."""
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]            # Eq. 5 mean over tokens: (B, D)
        return self.head(self.norm(x))                                   # Eq. 5 LN, then Linear: (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))               # (B, classes)


def attention_maps(model: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """[not in paper: repository convention] Run `model(x)` once and return every attention-like map it
    computes, keyed by the module's qualified name: LKCA's T (N, N), MHSA's softmax map (B, h, N, N).

    Sets `keep_attn` on every module that has it (their naive paths run), runs the model under
    `torch.no_grad()`, then restores the flags and deletes `last_attn`."""
    mods = {name: m for name, m in model.named_modules() if hasattr(m, "keep_attn")}
    flags = {name: m.keep_attn for name, m in mods.items()}
    try:
        for m in mods.values():
            m.keep_attn = True
        with torch.no_grad():
            model(x)
        return {name: m.last_attn for name, m in mods.items() if m.last_attn is not None}
    finally:
        for name, m in mods.items():
            m.keep_attn = flags[name]
            m.last_attn = None


# ----------------------------------------------------------------------------------------------------------
# Named variants (authors' models/create_model.py) and the paper's parameter counts
# ----------------------------------------------------------------------------------------------------------
# name: (depth, dim, heads, dim_head, mlp_dim, mixer)
CONFIGS = {
    "vit":          (9, 192, 12, 16, 384, "attention"),
    "vit_05m":      (4, 120, 4, 30, 240, "attention"),
    "vit_1m":       (7, 136, 8, 17, 272, "attention"),
    "vit_2m":       (6, 200, 8, 25, 400, "attention"),
    "vit_4m":       (7, 264, 8, 33, 528, "attention"),
    "vit_8m":       (10, 312, 8, 39, 624, "attention"),
    "vit_05m_lkca": (8, 100, 4, 25, 200, "lkca"),
    "vit_1m_lkca":  (9, 136, 8, 17, 272, "lkca"),       # = LKCA-T
    "vit_2m_lkca":  (9, 192, 12, 16, 384, "lkca"),
    "vit_lkca":     (10, 210, 10, 21, 420, "lkca"),     # = LKCA-B (iso-parameter with the 2.69M ViT)
    "vit_4m_lkca":  (11, 246, 6, 41, 492, "lkca"),
    "vit_8m_lkca":  (14, 306, 6, 51, 612, "lkca"),
    "vit_12m_lkca": (12, 360, 8, 45, 1080, "lkca"),     # = LKCA-L (MLP ratio 3)
}
ALIASES = {"lkca_t": "vit_1m_lkca", "lkca_b": "vit_lkca", "lkca_l": "vit_12m_lkca"}

# (dataset, num_classes, img_size) -> {variant: parameters reported in the paper}
PAPER_PARAMS = {
    ("cifar10", 10, 32): {  # Table II (and Table I for LKCA-T / LKCA-B)
        "vit": 2.69e6, "vit_lkca": 2.69e6, "vit_05m": 0.48e6, "vit_05m_lkca": 0.50e6, "vit_1m": 1.06e6,
        "vit_1m_lkca": 1.03e6, "vit_2m": 1.96e6, "vit_2m_lkca": 2.03e6, "vit_4m": 3.95e6, "vit_4m_lkca": 4.05e6,
        "vit_8m": 7.85e6, "vit_8m_lkca": 7.98e6, "lkca_t": 1.03e6, "lkca_b": 2.69e6},
    ("tiny-imagenet", 200, 64): {  # Table V
        "lkca_t": 1.07e6, "lkca_b": 2.76e6, "lkca_l": 12.65e6, "vit": 2.76e6},
}
# The paper's MACs ("Flops", ptflops = Linear layers only) on CIFAR-10, quoted in §IV-B's text.
PAPER_MACS = {"vit": 174.25e6, "vit_lkca": 170.81e6, "vit_05m": 30.58e6, "vit_05m_lkca": 31.34e6}


def _factory(name: str):
    depth, dim, heads, dim_head, mlp_dim, mixer = CONFIGS[ALIASES.get(name, name)]

    def build(num_classes: int = 10, img_size: int = 32, **kwargs) -> ViT:
        cfg = dict(depth=depth, dim=dim, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, mixer=mixer)
        cfg.update(kwargs)
        return ViT(img_size=img_size, num_classes=num_classes, **cfg)

    build.__name__ = name
    build.__doc__ = (f"{name}: depth {depth}, dim {dim}, {heads} heads x {dim_head}, MLP {mlp_dim}, "
                     f"{'LKCA' if mixer == 'lkca' else 'MHSA'} mixer. kwargs go to ViT.")
    return build


vit = _factory("vit")
vit_05m, vit_1m, vit_2m, vit_4m, vit_8m = (_factory(n) for n in ("vit_05m", "vit_1m", "vit_2m", "vit_4m", "vit_8m"))
vit_05m_lkca = _factory("vit_05m_lkca")
vit_1m_lkca = _factory("vit_1m_lkca")
vit_2m_lkca = _factory("vit_2m_lkca")
vit_lkca = _factory("vit_lkca")
vit_4m_lkca = _factory("vit_4m_lkca")
vit_8m_lkca = _factory("vit_8m_lkca")
vit_12m_lkca = _factory("vit_12m_lkca")
lkca_t, lkca_b, lkca_l = _factory("lkca_t"), _factory("lkca_b"), _factory("lkca_l")

MODELS = {
    "vit": vit, "vit_05m": vit_05m, "vit_1m": vit_1m, "vit_2m": vit_2m, "vit_4m": vit_4m, "vit_8m": vit_8m,
    "vit_05m_lkca": vit_05m_lkca, "vit_1m_lkca": vit_1m_lkca, "vit_2m_lkca": vit_2m_lkca, "vit_lkca": vit_lkca,
    "vit_4m_lkca": vit_4m_lkca, "vit_8m_lkca": vit_8m_lkca, "vit_12m_lkca": vit_12m_lkca,
    "lkca_t": lkca_t, "lkca_b": lkca_b, "lkca_l": lkca_l,
}

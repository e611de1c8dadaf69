"""UniRepLKNet: a large-kernel ConvNet whose big depthwise kernels are trained as a sum of dilated small ones.

Paper: Xiaohan Ding, Yiyuan Zhang, Yixiao Ge, Sijie Zhao, Lin Song, Xiangyu Yue, Ying Shan, "UniRepLKNet: A
Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image Recognition"
(CVPR 2024, arXiv 2311.15599). Authors' code: github.com/AILab-CVC/UniRepLKNet (`unireplknet.py`).

The idea
--------
Large kernels "see wide without going deep": a 13 x 13 depthwise convolution in every block of the middle and
late stages gives a ConvNet a large receptive field with few layers. A large kernel trained alone learns poorly,
so during training the **Dilated Reparam Block** runs, in parallel with the K x K depthwise conv, a few small
depthwise convs with *dilation* (for K = 13: 5x5 r=1, 7x7 r=2, 3x3 r=3, 3x3 r=4, 3x3 r=5), each followed by its
own BatchNorm, and adds the results. All of this is linear at inference time, so after training it collapses
(**structural re-parameterisation**) into one K x K depthwise conv with a bias, and the deployed network is
a plain stack of large-kernel convs:

1. **fold each BN into its conv** (BN in eval mode is an affine map per channel):
       BN(W * x) = (gamma / sigma) W * x + (beta - mu gamma / sigma),   sigma = sqrt(running_var + eps);
2. **a k x k kernel at dilation r is a dense kernel of size r(k-1)+1** with r-1 zeros between the taps
   (paper Eq. 1: W' = conv_transpose2d(W, I, stride=r), I the 1 x 1 identity kernel);
3. **pad every dense kernel to K x K (centred) and add**: convolution is linear in the kernel, and with
   'same' padding a centred zero-padded kernel computes the same output.

The block (the paper's LarK Block for K = 13, SmaK Block for K = 3) is
    x + layer_scale * BN(Linear(GRN(GELU(Linear(SE(BN(DilatedReparam(x))))))))
and the network is a 4-stage pyramid (strides 4, 8, 16, 32) like ConvNeXt.

Section / equation map (the paper's parts by topic; Eq. 1 is the paper's numbering)
-----------------------------------------------------------------------------------
    "Dilated Reparam Block", Eq. 1 (dilated -> dense)    -> dilate_kernel (Eq. 1 literally), dilate_kernel_naive
    "Dilated Reparam Block", branch merge                -> DilatedReparamBlock.merge_dilated_branches,
                                                            fuse_bn, merge_dilated_into_large_kernel
    "Architectural Guidelines": SE block, BN, FFN        -> SEBlock, UniRepLKNetBlock (LarK / SmaK blocks)
    "Architectural Guidelines": small kernels for the
      extra depth of stage 3 (13,3 / 13,3,3 patterns)    -> KERNEL_SIZES
    "Architectural Specifications": A/F/P/N/T/S/B/L/XL  -> DEPTHS, DIMS, MODELS
    Re-parameterised inference structure                 -> UniRepLKNetBlock.reparameterize,
                                                            UniRepLKNet.reparameterize, deploy=True
    ImageNet table (#params)                             -> PAPER_PARAMS, TRAIN_PARAMS, DEPLOY_PARAMS

What differs from the paper or the authors' code, and why
---------------------------------------------------------
1. **No iGEMM large-kernel CUDA extension** (`get_conv2d(..., attempt_use_lk_impl=True)` in the code): every
   conv is a plain `nn.Conv2d`, so the file runs anywhere. The repository's `common.kernels.accelerate(model)`
   swaps in Triton depthwise kernels from outside (it matches the deploy kernel and every train-time branch).
2. **No SyncBN, no gradient checkpointing (`with_cp`), no MMDetection/MMSegmentation backbone mode**
   (`init_cfg`, four normalised feature maps): training infrastructure, not the model. `forward_features`
   returns the last feature map; take earlier stages with a hook or `create_feature_extractor`.
3. **`kernel_size=0` (an Identity instead of the depthwise conv, an ablation switch in the code) is not
   offered**; only the kernel sizes the released models use (3, 13) and the code's other table entries
   (5, 7, 9, 11, 15, 17) are.
4. **Re-parameterisation is out of place per module but leaves the same structure and keys** as the authors'
   `reparameterize_unireplknet()` (also available under that name): after it the state_dict has exactly the
   keys of a model built with `deploy=True` and loads into one. The code prints a relative error for one
   block; tests/test_unireplknet.py asserts the whole model (float64, randomised BN statistics).
5. **Channels-first LayerNorm** runs `F.layer_norm` on a permuted view by default (`LayerNorm2d.fused`); the
   code's explicit mean/variance formula is kept as the naive path and tested equal.
6. **The SE gate broadcasts** instead of the code's `x.view(-1, C, 1, 1)` (same values; traceable).
7. **Input validation** (clear errors for un-batched, wrong-channel, integer inputs) is ours.
8. **No attention maps**: nothing in UniRepLKNet computes an attention-like (token x token) map. The SE gate is a
   per-channel scalar (B, C, 1, 1); it is not exposed as an attention map, so this file has no
   `attention_maps()`.

What the paper leaves open (taken from the authors' code)
---------------------------------------------------------
* Branch kernel sizes / dilations for each large kernel K (`BRANCHES`), BN after every branch, no conv biases
  in training form.
* GRN (global response normalisation, from ConvNeXt V2) after the GELU, with a bias that re-parameterisation
  folds into the next Linear; the second Linear has no bias and is followed by a BN; layer scale init 1e-6.
* Stem: 3x3 conv stride 2 -> LN -> GELU -> 3x3 conv stride 2 -> LN; downsampling: 3x3 conv stride 2 -> LN
  (LN eps 1e-6); head: global average pool -> LN -> Linear; truncated-normal(0.02) init of every conv and
  Linear weight, zero biases; stochastic depth rate growing linearly with block index.
* `img_size` does not change the network (it is fully convolutional); factories accept it for the shared
  interface and the model records it.

Parameter counts (``count_params``, 1000 classes; asserted exactly in tests/test_unireplknet.py)
---------------------------------------------------------------------------------------------
    variant  depths      dims              train form     deploy form    paper (deploy form)
    A        2,2,6,2     40,80,160,320      4,649,060      4,437,300       4.4M
    F        2,2,6,2     48,96,192,384      6,489,328      6,235,216       6.2M
    P        2,2,6,2     64,128,256,512    11,080,520     10,741,704      10.7M
    N        2,2,8,2     80,160,320,640    18,818,880     18,318,560      18.3M
    T        3,3,18,3    80,160,320,640    31,693,420     31,037,980      31M
    S        3,3,27,3    96,192,384,768    56,456,704     55,645,984      56M
    B        3,3,27,3    128,256,512,1024  99,089,416     98,008,456      98M
    L        3,3,27,3    192,384,768,1536 220,076,056    218,454,616     218M
    XL       3,3,27,3    256,512,1024,2048 388,690,984   386,529,064     386M
  A..S: train and deploy counts equal those measured by building the authors' code (B/L/XL were not measured
  from the code; they are S's layout with wider channels). Every deploy count rounds to the paper's figure,
  except XL: 386.53M is printed as 386M (truncated; S's 55.65M is rounded up to 56M), 0.14% apart.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

# Kernel sizes and dilations of the parallel small-kernel branches of a Dilated Reparam Block with a K x K
# large kernel (the authors' code; "default settings, not tuned carefully" in its comment).
BRANCHES = {
    17: ((5, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    11: ((5, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    9: ((5, 1), (5, 2), (3, 3), (3, 4)),
    7: ((5, 1), (3, 2), (3, 3)),
    5: ((3, 1), (3, 2)),
}


# ----------------------------------------------------------------------------------------------------------
# Re-parameterisation maths, one step per function (each tested on its own)
# ----------------------------------------------------------------------------------------------------------
def fuse_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """Step 1: BN(conv(x)) in eval mode as one conv. weight (C_out, C_in/g, k, k) -> (weight', bias' (C_out,)).

    BN(z) = gamma (z - mu) / sigma + beta with sigma = sqrt(running_var + eps) is affine per channel, so
    BN(W * x + b) = (gamma / sigma) W * x + beta + (b - mu) gamma / sigma."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()                  # (C,) gamma / sigma
    b = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (b - bn.running_mean) * scale


def dilate_kernel(kernel: torch.Tensor, r: int) -> torch.Tensor:
    """Step 2, the paper's Eq. 1 literally: W' = conv_transpose2d(W, I, stride=r), I = the 1 x 1 kernel [1].

    A depthwise kernel (C, 1, k, k) at dilation r equals the dense kernel (C, 1, r(k-1)+1, r(k-1)+1) that has the
    k x k taps at every r-th position and zeros in between. A transposed conv with stride r and a 1 x 1 identity
    kernel writes input pixel (i, j) to output (r i, r j) and leaves the rest zero: exactly that spreading.
    (Depthwise kernels only: channel dim 1, as in every Dilated Reparam Block.)"""
    if kernel.shape[1] != 1:
        raise ValueError(f"dilate_kernel expects a depthwise kernel (C, 1, k, k), got {tuple(kernel.shape)}")
    identity = torch.ones(1, 1, 1, 1, dtype=kernel.dtype, device=kernel.device)
    return F.conv_transpose2d(kernel, identity, stride=r)                 # (C, 1, r(k-1)+1, r(k-1)+1)


def dilate_kernel_naive(kernel: torch.Tensor, r: int) -> torch.Tensor:
    """Step 2, the naive path: allocate zeros and write the taps to every r-th row and column."""
    C, one, k, _ = kernel.shape
    dense = kernel.new_zeros(C, one, r * (k - 1) + 1, r * (k - 1) + 1)   # (C, 1, r(k-1)+1, r(k-1)+1)
    dense[:, :, ::r, ::r] = kernel
    return dense


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Step 3a: zero-pad an odd (C, 1, k, k) kernel to (C, 1, size, size), centred. With 'same' padding
    ((size-1)/2 instead of (k-1)/2) the output is unchanged: the extra taps only ever multiply zeros."""
    k = kernel.shape[-1]
    if k > size or (size - k) % 2:
        raise ValueError(f"cannot centre a {k}x{k} kernel in {size}x{size} (needs k <= size, both odd)")
    p = (size - k) // 2
    return F.pad(kernel, [p, p, p, p])                                    # (C, 1, size, size)


def merge_dilated_into_large_kernel(large: torch.Tensor, small: torch.Tensor, r: int) -> torch.Tensor:
    """Steps 2 + 3: large (C, 1, K, K) + the dense, centred form of a dilated small kernel (C, 1, k, k)."""
    return large + pad_kernel(dilate_kernel(small, r), large.shape[-1])  # (C, 1, K, K)


# ----------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (the code's LayerNorm(data_format="channels_first")).

    `fused=True`: F.layer_norm on a channels-last view; `fused=False`: the code's explicit formula."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps, self.dim, self.fused = eps, dim, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # [not in paper: F.layer_norm on a channels-last view; the code's formula is below]
            x = F.layer_norm(x.permute(0, 2, 3, 1), (self.dim,), self.weight, self.bias, self.eps)  # (B, H, W, C)
            return x.permute(0, 3, 1, 2)                                                          # (B, C, H, W)
        u = x.mean(1, keepdim=True)                                       # (B, 1, H, W)
        s = (x - u).pow(2).mean(1, keepdim=True)                          # (B, 1, H, W) biased variance
        x = (x - u) / torch.sqrt(s + self.eps)                            # (B, C, H, W)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ToChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C), so nn.Linear acts on channels (a 1x1 conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)                                      # (B, H, W, C)


class ToChannelsFirst(nn.Module):
    """(B, H, W, C) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)                                      # (B, C, H, W)


class GRN(nn.Module):
    """Global Response Normalisation (ConvNeXt V2) on a channels-last (B, H, W, C) tensor:
        G = ||x||_2 over (H, W)  (B, 1, 1, C);  N = G / (mean_C G + 1e-6);  out = (gamma N + 1) x + beta.
    `use_bias=False` is the deploy form (beta folded into the next Linear by re-parameterisation)."""

    def __init__(self, dim: int, use_bias: bool = True):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.norm(x, p=2, dim=(1, 2), keepdim=True)                  # (B, 1, 1, C)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)                     # (B, 1, 1, C)
        out = (self.gamma * n + 1) * x                                    # (B, H, W, C)
        return out if self.beta is None else out + self.beta


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: x * sigmoid(up(ReLU(down(avgpool(x))))), reduction 4 (keys `down`, `up`)."""

    def __init__(self, dim: int, internal: int):
        super().__init__()
        self.down = nn.Conv2d(dim, internal, 1, bias=True)
        self.up = nn.Conv2d(internal, dim, 1, bias=True)
        self.nonlinear = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)                                   # (B, C, 1, 1)
        s = torch.sigmoid(self.up(self.nonlinear(self.down(s))))          # (B, C, 1, 1) channel gate
        return x * s                  # (B, C, H, W) [not in paper: broadcast instead of the code's view(-1, C, 1, 1)]


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (train mode only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(1 - self.p)   # (B, 1, 1, 1)
        return x * keep / (1 - self.p)


def _dw_conv(channels: int, k: int, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    """A depthwise, stride-1, 'same' conv: exactly what common.kernels.accelerate matches."""
    return nn.Conv2d(channels, channels, k, stride=1, padding=dilation * (k - 1) // 2, dilation=dilation,
                     groups=channels, bias=bias)


class DilatedReparamBlock(nn.Module):
    """K x K depthwise conv + BN, in parallel with small dilated depthwise convs + BN (`BRANCHES[K]`), summed.

    Keys (the authors'): `lk_origin`, `origin_bn`, `dil_conv_k{k}_{r}`, `dil_bn_k{k}_{r}`; deploy form: only
    `lk_origin` (with a bias). (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, kernel_size: int, deploy: bool = False, branches: bool = True):
        super().__init__()
        if kernel_size not in BRANCHES:
            raise ValueError(f"Dilated Reparam Block supports kernel sizes {sorted(BRANCHES)}, got {kernel_size}")
        self.kernel_size, self.channels = kernel_size, channels
        # [not in paper: `branches=False` is an ablation switch (the K x K conv + BN alone, no dilated branches)]
        self.branches = BRANCHES[kernel_size] if branches else ()
        self.deploy = deploy
        self.lk_origin = _dw_conv(channels, kernel_size, bias=deploy)
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in self.branches:
                setattr(self, f"dil_conv_k{k}_{r}", _dw_conv(channels, k, dilation=r))
                setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.lk_origin(x)                                      # (B, C, H, W) one merged K x K conv
        out = self.origin_bn(self.lk_origin(x))                           # (B, C, H, W)
        for k, r in self.branches:                                        # the naive (training) form
            out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
        return out

    @torch.no_grad()
    def merged_kernel(self):
        """The equivalent (weight (C, 1, K, K), bias (C,)) of the whole training form in eval mode."""
        w, b = fuse_bn(self.lk_origin.weight, self.lk_origin.bias, self.origin_bn)       # step 1
        for k, r in self.branches:
            wk, bk = fuse_bn(getattr(self, f"dil_conv_k{k}_{r}").weight, None,
                             getattr(self, f"dil_bn_k{k}_{r}"))                          # step 1
            w = merge_dilated_into_large_kernel(w, wk, r)                                 # steps 2 + 3
            b = b + bk                                                                    # biases add too
        return w, b

    @torch.no_grad()
    def merge_dilated_branches(self) -> None:
        """Collapse into the deploy form in place: `lk_origin` becomes the merged K x K conv with a bias."""
        if self.deploy:
            return
        w, b = self.merged_kernel()
        conv = _dw_conv(self.channels, self.kernel_size, bias=True).to(w.device, w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.lk_origin = conv
        del self.origin_bn
        for k, r in self.branches:
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        self.deploy = True


class UniRepLKNetBlock(nn.Module):
    """LarK Block (kernel_size >= 7: Dilated Reparam Block) or SmaK Block (3 or 5: one depthwise conv):

        y = dwconv(x) -> BN -> SE -> Linear(C, 4C) -> GELU -> GRN -> Linear(4C, C) -> BN     (B, C, H, W)
        out = x + drop_path(layer_scale * y)

    Deploy form (`deploy=True` or after `reparameterize()`): the BNs, the GRN bias and the layer scale are
    folded into the depthwise conv and the second Linear, so `norm` is an Identity and `gamma` is None.
    """

    def __init__(self, dim: int, kernel_size: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 deploy: bool = False, ffn_factor: int = 4, branches: bool = True):
        super().__init__()
        if kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, branches=branches)
        elif kernel_size in (3, 5):
            self.dwconv = _dw_conv(dim, kernel_size, bias=deploy)
        else:
            raise ValueError(f"kernel_size must be 3, 5 or one of {sorted(k for k in BRANCHES if k >= 7)}, "
                             f"got {kernel_size}")
        self.norm = nn.Identity() if deploy else nn.BatchNorm2d(dim)
        self.se = SEBlock(dim, dim // 4)
        ffn = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(ToChannelsLast(), nn.Linear(dim, ffn))      # keys pwconv1.1.*
        self.act = nn.Sequential(nn.GELU(), GRN(ffn, use_bias=not deploy))      # keys act.1.gamma/beta
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn, dim), ToChannelsFirst())  # keys pwconv2.0.*
        else:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn, dim, bias=False), ToChannelsFirst(), nn.BatchNorm2d(dim))
        use_ls = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_ls else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))                            # (B, C, H, W)
        y = self.pwconv2(self.act(self.pwconv1(y)))                       # (B, H, W, 4C) inside -> (B, C, H, W)
        if self.gamma is not None:
            y = self.gamma.view(1, -1, 1, 1) * y                          # (B, C, H, W) layer scale
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold everything linear into the convs / Linear, in place (uses BN running statistics: eval mode)."""
        # (a) the parallel branches -> one K x K conv with bias (steps 1-3)
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.merge_dilated_branches()
        # (b) the block's BN after the depthwise conv -> into that conv (step 1 again)
        if isinstance(self.norm, nn.BatchNorm2d):
            conv = self.dwconv.lk_origin if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
            w, b = fuse_bn(conv.weight, conv.bias, self.norm)
            new = _dw_conv(conv.in_channels, conv.kernel_size[0], bias=True).to(w.device, w.dtype)
            new.weight.copy_(w)
            new.bias.copy_(b)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = new
            else:
                self.dwconv = new
            self.norm = nn.Identity()
        # (c) GRN bias, BN and layer scale -> the second Linear. With g = GRN without its bias,
        #     y = s * BN(W (g + beta)) = s * [gamma_bn / sigma * (W g + W beta - mu) + beta_bn]
        #       = (s gamma_bn / sigma) W g + s (beta_bn + (W beta - mu) gamma_bn / sigma)
        if len(self.pwconv2) == 3:
            lin, bn, grn = self.pwconv2[0], self.pwconv2[2], self.act[1]
            s = self.gamma if self.gamma is not None else torch.ones_like(bn.weight)       # (C,)
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()                           # (C,) gamma_bn / sigma
            lin_b = lin.weight @ grn.beta.reshape(-1) if grn.beta is not None else 0.0    # (C,) W beta
            if lin.bias is not None:
                lin_b = lin_b + lin.bias
            new = nn.Linear(lin.in_features, lin.out_features, bias=True).to(lin.weight.device, lin.weight.dtype)
            new.weight.copy_(lin.weight * (s * scale).reshape(-1, 1))                      # (C, 4C)
            new.bias.copy_(s * (bn.bias + (lin_b - bn.running_mean) * scale))              # (C,)
            self.pwconv2 = nn.Sequential(new, ToChannelsFirst())
            grn.beta = None
            self.gamma = None


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------
def check_images(x, in_chans: int = 3) -> torch.Tensor:
    """Return x unchanged if it is a float batch of (B, 3, H, W) images, else raise a clear error.

    Registered with torch.fx.wrap below, so FX tracing (create_feature_extractor) records a call instead of
    evaluating these Python `if`s on a proxy; callers use the returned tensor, so the check stays in the traced
    graph's data path (dead-code elimination would drop a call whose result is unused)."""
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
    return x


torch.fx.wrap("check_images")


class UniRepLKNet(nn.Module):
    """UniRepLKNet for classification.

    Args:
        depths, dims: blocks and channels per stage.
        kernel_sizes: one tuple per stage with one kernel size per block; default `KERNEL_SIZES[depths]`.
        drop_path_rate: stochastic depth, growing linearly from 0 to this over all blocks.
        layer_scale_init_value: initial layer scale (1e-6); None or 0 for none.
        head_init_scale: multiplies the head's initial weights and bias.
        deploy: build the re-parameterised inference structure directly (load a converted state_dict into it).
        img_size: recorded only (the network is fully convolutional and accepts any H, W).
        branches: False drops the dilated branches of every Dilated Reparam Block (an ablation switch, not in
            the paper or the code: the K x K conv + BN alone; `reparameterize` then only folds the BNs).

    Keys match the authors' checkpoints: `downsample_layers.{0..3}`, `stages.{i}.{j}.*`, `norm`, `head`.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, depths: Sequence[int] = (3, 3, 27, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), drop_path_rate: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-6, head_init_scale: float = 1.0,
                 kernel_sizes: Optional[Sequence[Sequence[int]]] = None, deploy: bool = False,
                 img_size: int = 224, branches: bool = True):
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims need 4 entries (4 stages), got {depths} and {dims}")
        if kernel_sizes is None:
            if depths not in KERNEL_SIZES:
                raise ValueError(f"no default kernel sizes for depths {depths} (defaults exist for "
                                 f"{sorted(KERNEL_SIZES)}); pass kernel_sizes, one tuple per stage")
            kernel_sizes = KERNEL_SIZES[depths]
        if [len(k) for k in kernel_sizes] != list(depths):
            raise ValueError(f"kernel_sizes must give one size per block: lengths {[len(k) for k in kernel_sizes]}"
                             f" vs depths {list(depths)}")
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.depths, self.dims, self.kernel_sizes = depths, dims, tuple(tuple(k) for k in kernel_sizes)
        self.num_features = dims[-1]

        # Stem (stride 4) and three downsampling layers (stride 2 each).
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1),    # (B, C0/2, H/2, W/2)
            LayerNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),     # (B, C0, H/4, W/4)
            LayerNorm2d(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1),  # (B, C_{i+1}, H_i/2, W_i/2)
                LayerNorm2d(dims[i + 1])))

        rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                UniRepLKNetBlock(dims[i], self.kernel_sizes[i][j], drop_path=rates[cur + j],
                                 layer_scale_init_value=layer_scale_init_value, deploy=deploy,
                                 branches=branches)
                for j in range(depths[i])]))
            cur += depths[i]

        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def deploy(self) -> bool:
        """True when no block has training-only branches, BNs or layer scales left."""
        return all(isinstance(b.norm, nn.Identity) and b.gamma is None and len(b.pwconv2) == 2
                   for s in self.stages for b in s)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the last stage's feature map (B, dims[3], ceil(H/32), ceil(W/32))."""
        x = check_images(x, self.in_chans)   # (B, 3, H, W) [not in paper: input validation with clear errors]
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))                                            # (B, C_i, H/2^(i+2), W/2^(i+2))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C, h, w) -> logits (B, classes): global average pool -> LayerNorm -> Linear."""
        return self.head(self.norm(x.mean(dim=(-2, -1))))                 # (B, C) -> (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))                # (B, classes)

    @torch.no_grad()
    def reparameterize(self) -> "UniRepLKNet":
        """Convert in place to the deploy structure (same function in eval mode; keys of `deploy=True`)."""
        for m in list(self.modules()):
            if isinstance(m, UniRepLKNetBlock):
                m.reparameterize()
        return self

    reparameterize_unireplknet = reparameterize  # the authors' name


# ----------------------------------------------------------------------------------------------------------
# Named variants (the authors' code) and the paper's parameter counts
# ----------------------------------------------------------------------------------------------------------
DEPTHS = {"a": (2, 2, 6, 2), "f": (2, 2, 6, 2), "p": (2, 2, 6, 2), "n": (2, 2, 8, 2), "t": (3, 3, 18, 3),
          "s": (3, 3, 27, 3), "b": (3, 3, 27, 3), "l": (3, 3, 27, 3), "xl": (3, 3, 27, 3)}
DIMS = {"a": (40, 80, 160, 320), "f": (48, 96, 192, 384), "p": (64, 128, 256, 512), "n": (80, 160, 320, 640),
        "t": (80, 160, 320, 640), "s": (96, 192, 384, 768), "b": (128, 256, 512, 1024),
        "l": (192, 384, 768, 1536), "xl": (256, 512, 1024, 2048)}
# Kernel size of every block, per depth pattern: 3x3 (SmaK) in stage 1, 13x13 (LarK) in stages 2 and 4; in
# stage 3 all 13 for the small models, alternating 13,3 for T and 13,3,3 for S/B/L/XL ("the added depth uses
# small kernels").
KERNEL_SIZES = {
    (2, 2, 6, 2): ((3,) * 2, (13,) * 2, (13,) * 6, (13,) * 2),
    (2, 2, 8, 2): ((3,) * 2, (13,) * 2, (13,) * 8, (13,) * 2),
    (3, 3, 18, 3): ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),
    (3, 3, 27, 3): ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3),
}

# Parameters reported by the paper / the authors' README (ImageNet, 1000 classes; the deploy form).
PAPER_PARAMS = {"unireplknet_a": 4.4e6, "unireplknet_f": 6.2e6, "unireplknet_p": 10.7e6, "unireplknet_n": 18.3e6,
                "unireplknet_t": 31e6, "unireplknet_s": 56e6, "unireplknet_b": 98e6, "unireplknet_l": 218e6,
                "unireplknet_xl": 386e6}
# Exact counts of this file, 1000 classes (A..S equal the authors' code, measured by building it).
TRAIN_PARAMS = {"unireplknet_a": 4_649_060, "unireplknet_f": 6_489_328, "unireplknet_p": 11_080_520,
                "unireplknet_n": 18_818_880, "unireplknet_t": 31_693_420, "unireplknet_s": 56_456_704,
                "unireplknet_b": 99_089_416, "unireplknet_l": 220_076_056, "unireplknet_xl": 388_690_984}
DEPLOY_PARAMS = {"unireplknet_a": 4_437_300, "unireplknet_f": 6_235_216, "unireplknet_p": 10_741_704,
                 "unireplknet_n": 18_318_560, "unireplknet_t": 31_037_980, "unireplknet_s": 55_645_984,
                 "unireplknet_b": 98_008_456, "unireplknet_l": 218_454_616, "unireplknet_xl": 386_529_064}


def _factory(key: str):
    def build(num_classes: int = 1000, img_size: int = 224, deploy: bool = False, **kwargs) -> UniRepLKNet:
        cfg = dict(depths=DEPTHS[key], dims=DIMS[key])
        cfg.update(kwargs)                                  # e.g. dims=(16, 32, 64, 128) for a CPU-sized model
        return UniRepLKNet(num_classes=num_classes, img_size=img_size, deploy=deploy, **cfg)

    build.__name__ = f"unireplknet_{key}"
    build.__doc__ = (f"UniRepLKNet-{key.upper()}: depths {DEPTHS[key]}, dims {DIMS[key]}. `deploy=True` builds "
                     "the re-parameterised structure; other kwargs go to UniRepLKNet.")
    return build


unireplknet_a, unireplknet_f, unireplknet_p = _factory("a"), _factory("f"), _factory("p")
unireplknet_n, unireplknet_t, unireplknet_s = _factory("n"), _factory("t"), _factory("s")
unireplknet_b, unireplknet_l, unireplknet_xl = _factory("b"), _factory("l"), _factory("xl")

MODELS = {
    "unireplknet_a": unireplknet_a, "unireplknet_f": unireplknet_f, "unireplknet_p": unireplknet_p,
    "unireplknet_n": unireplknet_n, "unireplknet_t": unireplknet_t, "unireplknet_s": unireplknet_s,
    "unireplknet_b": unireplknet_b, "unireplknet_l": unireplknet_l, "unireplknet_xl": unireplknet_xl,
}

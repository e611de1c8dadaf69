"""ConvNeXt: a ResNet modernised step by step into a pure ConvNet that matches Swin Transformers.

Paper: Zhuang Liu, Hanzi Mao, Chao-Yuan Wu, Christoph Feichtenhofer, Trevor Darrell, Saining Xie, "A ConvNet for
the 2020s" (CVPR 2022, arXiv 2201.03545). Authors' code: github.com/facebookresearch/ConvNeXt
(`models/convnext.py`); timm re-implements it as `timm.models.convnext`.

The idea
--------
Start from a ResNet-50 and apply, one at a time, the design choices that distinguish a hierarchical vision
Transformer (Swin) from it, keeping each change that helps (§2, Fig. 2): the Transformer training recipe;
Swin's stage compute ratio (3, 3, 9, 3); a "patchify" stem (a 4x4 convolution with stride 4, like a ViT's
patch embedding); depthwise convolutions with wider stages (ResNeXt-ify); an inverted bottleneck (the
Transformer MLP's 4x expansion); the depthwise convolution moved to the top of the block and enlarged to 7x7
(the size of Swin's attention window); GELU instead of ReLU, one activation and one normalisation per block,
LayerNorm instead of BatchNorm, and separate 2x2 stride-2 downsampling convolutions with a LayerNorm before
them. The result contains no attention, only standard ConvNet modules:

    block(x) = x + DropPath( gamma * Linear_2( GELU( Linear_1( LN( DWConv7x7(x) ) ) ) ) )      (Fig. 4)

where Linear_1 expands C -> 4C and Linear_2 projects 4C -> C, both applied to every pixel (1x1 convolutions),
and gamma is a learned per-channel "layer scale" initialised to 1e-6 (§3.1, from CaiT).

**No attention maps.** ConvNeXt computes no attention-like map (its token mixer is a fixed-size depthwise
convolution whose weights do not depend on the input), so this file defines no `keep_attn` / `attention_maps`.
What a unit "looks at" is measured instead by its effective receptive field (the notebook computes it).

Section / equation map
----------------------
    §2.2 "Changing stem to Patchify" (4x4, stride 4) + LN       -> ConvNeXt.downsample_layers[0]
    §2.2 "Changing stage compute ratio" (3, 3, 9, 3)            -> CONFIGS (depths)
    §2.3 "ResNeXt-ify" (depthwise conv, width 96)               -> Block.dwconv (groups = C), CONFIGS (dims)
    §2.4 "Inverted Bottleneck" (C -> 4C -> C)                   -> Block.pwconv1, Block.pwconv2
    §2.5 "Moving up depthwise conv layer", "Increasing the kernel size" (7x7) -> Block.dwconv (first, K = 7)
    §2.6 "Replacing ReLU with GELU", "Fewer activation functions" -> Block.act (one GELU per block)
    §2.6 "Fewer normalization layers", "Substituting BN with LN" -> Block.norm (one LN per block)
    §2.6 "Separate downsampling layers" (LN, 2x2 conv stride 2)  -> ConvNeXt.downsample_layers[1..3]
    §2.6 LN "after the final global average pooling"             -> ConvNeXt.norm, ConvNeXt.forward_head
    Fig. 4 (the ConvNeXt block)                                  -> Block.forward
    §3.1 Layer Scale (init 1e-6), stochastic depth              -> Block.gamma, DropPath
    §3.1 variants T/S/B/L/XL (channels C, blocks B)              -> CONFIGS, MODELS
    Table 1 (#params, FLOPs at 224^2)                            -> PAPER_PARAMS, PAPER_GFLOPS
    authors' code: LayerNorm(data_format="channels_first")       -> LayerNorm2d (naive = their formula)
    authors' code: Block docstring, two equivalent layouts       -> Block.layout ("channels_last" / "first")

What differs from the paper or the authors' code, and why
---------------------------------------------------------
1. **`forward_features` returns the last stage's map** (B, C4, H/32, W/32), like timm, and `forward_head` does
   the pooling, the final LayerNorm and the classifier. The authors' `forward_features` already pools and
   normalises (returns (B, C4)). The logits are identical; the map is more useful (features, ERFs).
2. **Channels-first LayerNorm has two paths.** `LayerNorm2d.fused = True` (default) permutes to channels-last
   and calls `F.layer_norm` (what timm does); `fused = False` is the authors' explicit formula
   (mean, biased variance, (x - u) / sqrt(s + eps)). Same parameters, tested equal (outputs and gradients).
3. **`Block.layout`** selects one of the two equivalent block implementations the authors' docstring
   describes: "channels_last" (default; their choice: permute, LN, `nn.Linear`) or "channels_first" (LN over
   channels and the two Linears applied as 1x1 convolutions, in (B, C, H, W)). Same parameters, tested equal.
4. **DropPath is defined here** (the authors import timm's); it is always a module (an identity when the rate
   is 0, instead of the code's `nn.Identity()`). It holds no parameters, so checkpoints are unaffected.
5. **Input checks.** Forward raises a clear error for non-4-D, non-float, wrong-channel or smaller than 32 px
   inputs (the authors' code fails deep inside a convolution). Sizes that are not multiples of 32 work, as in
   the authors' code: each strided convolution floors, dropping the last row/column of odd-sized maps.
6. **Extra knobs, off by default** `[not in paper]`: `kernel_size` (the §2.5 ablation: 3, 5, 7, 9, 11; the
   paper's models all use 7) and `in_chans`.
7. **`convert_timm(state_dict)`** maps timm's key names (and its 1x1-conv MLP weights of the atto..nano
   models, `conv_mlp=True`) to the authors' names, so timm checkpoints load with `strict=True`.

The state_dict keys equal the authors' released checkpoints (`downsample_layers.{0..3}.{0,1}`,
`stages.{i}.{j}.{dwconv, norm, pwconv1, pwconv2, gamma}`, `norm`, `head`): their .pth files load with
`model.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)`.

What the paper leaves open (taken from the authors' code)
---------------------------------------------------------
* LayerNorm eps 1e-6 everywhere; the final LN is a plain `nn.LayerNorm` on the pooled (B, C) vector.
* Initialisation: truncated normal std 0.02 for every Conv2d/Linear weight, zero biases; LN weight 1, bias 0;
  the head's weight and bias multiplied by `head_init_scale` (1.0; the authors fine-tune with 0.001).
* Stochastic depth grows linearly over blocks from 0 to `drop_path_rate` (code default 0.0; the authors'
  ImageNet-1K runs use 0.1 / 0.4 / 0.5 / 0.5 for T / S / B / L, TRAINING.md).
* atto / femto / pico / nano are not in the paper: Ross Wightman's smaller configs in timm (same block);
  included because they train on a CPU.

Parameter counts and MACs (1000 classes, 224 x 224; `count_params`, `common.flops.count_macs`)
----------------------------------------------------------------------------------------------
    variant   depths        dims                  ours params   paper   ours GMACs   paper "FLOPs"
    atto      2, 2, 6, 2    40, 80, 160, 320        3,695,520     -        0.5473       -
    femto     2, 2, 6, 2    48, 96, 192, 384        5,217,784     -        0.7796       -
    pico      2, 2, 6, 2    64, 128, 256, 512       9,045,672     -        1.3671       -
    nano      2, 2, 8, 2    80, 160, 320, 640      15,593,560     -        2.4455       -
    T         3, 3, 9, 3    96, 192, 384, 768      28,589,128    28M       4.4555      4.5G
    S         3, 3, 27, 3   96, 192, 384, 768      50,223,688    50M       8.6837      8.7G
    B         3, 3, 27, 3   128, 256, 512, 1024    88,591,464    89M      15.3547     15.4G
    L         3, 3, 27, 3   192, 384, 768, 1536   197,767,336   198M      34.3614     34.4G
    XL        3, 3, 27, 3   256, 512, 1024, 2048  350,196,968   350M      60.9210     60.9G
  At 384 x 384: T 13.0923 (README 13.1G), S 25.5180 (25.5G), B 45.1221 (Table 1: 45.0G; the README's 22K
  table: 47.0G), L 100.9776 (101.0G), XL 179.0293 (179.0G).
The paper's "FLOPs" are multiply-accumulates of the convolutions and Linear layers; ours are
`count_macs(model, 224)["total"]` (all of it convolutions and `addmm`; norms, GELU and pooling are not counted)
and round to the paper's printed value for every variant at 224 and every 384 entry but B's (45.12 vs 45.0,
0.3% apart, and the authors print two different numbers for it). The parameter counts equal timm's and the
authors' code's exactly (tests build timm's models); the paper rounds T's 28.59M down to "28M" in Table 1
(its README's ImageNet-22K table says 29M).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_SIZE = 32  # the stem divides by 4, the three downsampling layers by 2 each: 32 px -> a 1 x 1 map


# ----------------------------------------------------------------------------------------------------------
# Input checks (a module-level function, registered with torch.fx.wrap so FX tracing does not enter its ifs)
# ----------------------------------------------------------------------------------------------------------
def check_images(x, in_chans: int = 3) -> None:
    """Raise a clear error for inputs that are not a float batch of (B, 3, H, W) images of at least 32 px."""
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
    if x.shape[2] < MIN_SIZE or x.shape[3] < MIN_SIZE:
        raise ValueError(f"ConvNeXt downsamples by 32 (stem /4, then three /2), so images must be at least "
                         f"{MIN_SIZE}x{MIN_SIZE}, got {x.shape[2]}x{x.shape[3]}; resize (upsample) the images")


torch.fx.wrap("check_images")


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
def layer_norm_channels_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              eps: float) -> torch.Tensor:
    """The authors' channels-first LayerNorm, literally: normalise every pixel over its C channels."""
    u = x.mean(1, keepdim=True)                                  # (B, 1, H, W): mean over channels
    s = (x - u).pow(2).mean(1, keepdim=True)                     # (B, 1, H, W): biased variance
    x = (x - u) / torch.sqrt(s + eps)                            # (B, C, H, W)
    return weight[:, None, None] * x + bias[:, None, None]       # (B, C, H, W): per-channel affine


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (the authors' `LayerNorm(data_format="channels_first")`).

    Used by the stem and before each downsampling conv (§2.6). `fused=True` (default): permute to channels-last
    and call `F.layer_norm` (one fused kernel, as timm does); `fused=False`: the authors' explicit formula.
    Parameters `weight`, `bias` (C,), as in the checkpoints.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps, self.num_channels, self.fused = eps, num_channels, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return layer_norm_channels_first(x, self.weight, self.bias, self.eps)        # (B, C, H, W)
        x = x.permute(0, 2, 3, 1)                                                          # (B, H, W, C)
        x = F.layer_norm(x, (self.num_channels,), self.weight, self.bias, self.eps)        # (B, H, W, C)
        return x.permute(0, 3, 1, 2)                                                       # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, fused={self.fused}"


class DropPath(nn.Module):
    """Stochastic depth (§3.1): in training, drop the whole residual branch of a sample with probability p and
    scale the kept ones by 1 / (1 - p); an identity in eval mode or when p = 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(1.0 - self.p)   # (B, 1, 1, 1): one coin per image
        return x * keep / (1.0 - self.p)                                      # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"p={self.p}"


LAYOUTS = ("channels_last", "channels_first")


class Block(nn.Module):
    """The ConvNeXt block (Fig. 4): DWConv 7x7 -> LN -> 1x1 C->4C -> GELU -> 1x1 4C->C -> layer scale -> drop path,
    plus the identity shortcut. Input and output (B, C, H, W).

    `layout="channels_last"` (default, the authors' choice): permute to (B, H, W, C), `nn.LayerNorm`, two
    `nn.Linear`s, permute back. `layout="channels_first"`: the same maths in (B, C, H, W) with a channels-first
    LN and the Linear weights used as 1x1 convolutions (the first implementation in the authors' docstring).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 kernel_size: int = 7, layout: str = "channels_last"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (centred 'same' padding), got {kernel_size}")
        self.layout = layout
        # §2.3 depthwise (groups = C) and §2.5 "moved up" and 7x7: the only spatial mixing in the block. A plain
        # nn.Conv2d with 'same' zero padding (common.kernels.accelerate matches it by structure).
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)        # §2.6: one LN per block, BN replaced
        self.pwconv1 = nn.Linear(dim, 4 * dim)         # §2.4 inverted bottleneck: expand 4x (a 1x1 conv)
        self.act = nn.GELU()                           # §2.6: one GELU per block, between the 1x1 layers
        self.pwconv2 = nn.Linear(4 * dim, dim)         # project back to C
        # §3.1 Layer Scale (CaiT): per-channel gain initialised tiny, so every block starts close to identity.
        self.gamma = (nn.Parameter(layer_scale_init_value * torch.ones(dim))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x                                                        # (B, C, H, W)
        x = self.dwconv(x)                                                  # (B, C, H, W): K x K per channel
        if self.layout == "channels_last":
            x = x.permute(0, 2, 3, 1)                                       # (B, H, W, C)
            x = self.norm(x)                                                # (B, H, W, C)
            x = self.pwconv1(x)                                             # (B, H, W, 4C)
            x = self.act(x)                                                 # (B, H, W, 4C)
            x = self.pwconv2(x)                                             # (B, H, W, C)
            if self.gamma is not None:
                x = self.gamma * x                                          # (B, H, W, C)
            x = x.permute(0, 3, 1, 2)                                       # (B, C, H, W)
        else:
            x = layer_norm_channels_first(x, self.norm.weight, self.norm.bias, self.norm.eps)  # (B, C, H, W)
            x = F.conv2d(x, self.pwconv1.weight[:, :, None, None], self.pwconv1.bias)  # (B, 4C, H, W): 1x1
            x = self.act(x)                                                 # (B, 4C, H, W)
            x = F.conv2d(x, self.pwconv2.weight[:, :, None, None], self.pwconv2.bias)  # (B, C, H, W): 1x1
            if self.gamma is not None:
                x = self.gamma[:, None, None] * x                           # (B, C, H, W)
        return shortcut + self.drop_path(x)                                 # (B, C, H, W)


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------
class ConvNeXt(nn.Module):
    """ConvNeXt: patchify stem -> 4 stages of Blocks, with LN + 2x2 stride-2 conv between them -> GAP -> LN -> Linear.

    Args:
        num_classes: classifier outputs (1000 for ImageNet-1K).
        img_size: nominal input side; only recorded (`self.img_size`, used by counters/notebooks): the network
            is fully convolutional and accepts any H, W >= 32.
        depths: blocks per stage (§3.1's B). dims: channels per stage (§3.1's C).
        drop_path_rate: stochastic depth of the last block; rates grow linearly from 0 over all blocks.
        layer_scale_init_value: initial gamma (1e-6); 0 removes layer scale (no `gamma` parameters).
        head_init_scale: multiplies the classifier's initial weight and bias (authors' fine-tuning uses 0.001).
        kernel_size: depthwise kernel size [not in paper as a knob: 7 in every model; §2.5 ablates 3..11].
        layout: block implementation, "channels_last" or "channels_first" (identical maths; see Block).
        in_chans: input channels (3).
    """

    def __init__(self, num_classes: int = 1000, img_size: int = 224, depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, head_init_scale: float = 1.0, kernel_size: int = 7,
                 layout: str = "channels_last", in_chans: int = 3):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt has 4 stages: depths and dims need 4 entries, got {depths} and {dims}")
        if img_size < MIN_SIZE:
            raise ValueError(f"img_size must be at least {MIN_SIZE} (the network downsamples by 32), got {img_size}")
        self.num_classes, self.img_size, self.in_chans = num_classes, img_size, in_chans
        self.depths, self.dims = tuple(depths), tuple(dims)

        # §2.2 "patchify" stem: non-overlapping 4x4 patches, stride 4 (a ViT patch embedding), then LN (§2.6).
        # §2.6 separate downsampling: LN, then a 2x2 conv with stride 2, between stages.
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),       # (B, C1, H/4, W/4)
            LayerNorm2d(dims[0], eps=1e-6)))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=1e-6),                           # §2.6: "LN ... before each downsampling"
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))  # (B, C_{i+1}, H_i/2, W_i/2)

        n = sum(depths)                                   # linear stochastic-depth schedule, 0 .. drop_path_rate
        rates = [drop_path_rate * k / (n - 1) if n > 1 else 0.0 for k in range(n)]   # (plain Python: meta-safe)
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                Block(dims[i], rates[cur + j], layer_scale_init_value, kernel_size, layout)
                for j in range(depths[i])]))
            cur += depths[i]

        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)   # §2.6: LN after the final global average pooling
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        self.head.weight.data.mul_(head_init_scale)
        self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):     # the authors' init: trunc. normal std .02, zero bias
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(m.bias)

    def set_layout(self, layout: str) -> "ConvNeXt":
        """Switch every block to another (equivalent) implementation: "channels_last" or "channels_first"."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        for m in self.modules():
            if isinstance(m, Block):
                m.layout = layout
        return self

    def set_fused_norm(self, fused: bool) -> "ConvNeXt":
        """Use F.layer_norm (True) or the authors' explicit formula (False) in every channels-first LN."""
        for m in self.modules():
            if isinstance(m, LayerNorm2d):
                m.fused = fused
        return self

    def forward_stages(self, x: torch.Tensor) -> list:
        """Images (B, 3, H, W) -> the output of each of the 4 stages: (B, C_i, H/2^(i+2), W/2^(i+2)), i = 0..3."""
        check_images(x, self.in_chans)
        outs = []
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))                                              # (B, C_i, H_i, W_i)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the last stage's feature map (B, C4, H/32, W/32) (before pooling; see item 1
        of "What differs")."""
        check_images(x, self.in_chans)
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))                                              # (B, C_i, H_i, W_i)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C4, h, w) -> logits (B, classes): global average pool -> LN -> Linear."""
        x = x.mean(dim=(-2, -1))                                            # (B, C4): global average pooling
        return self.head(self.norm(x))                                      # (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))                  # (B, classes)


# ----------------------------------------------------------------------------------------------------------
# timm checkpoints -> the authors' key names
# ----------------------------------------------------------------------------------------------------------
def convert_timm(state_dict: dict) -> dict:
    """Map a timm `convnext_*` state_dict (standard stem, `head_hidden_size=None`) to this file's (= the
    authors') key names, so it loads with `load_state_dict(strict=True)`.

        stem.{0,1}                          -> downsample_layers.0.{0,1}
        stages.{i}.downsample.{0,1}         -> downsample_layers.{i}.{0,1}        (i = 1, 2, 3)
        stages.{i}.blocks.{j}.conv_dw       -> stages.{i}.{j}.dwconv
        stages.{i}.blocks.{j}.norm          -> stages.{i}.{j}.norm
        stages.{i}.blocks.{j}.mlp.fc1/fc2   -> stages.{i}.{j}.pwconv1/pwconv2     (1x1-conv weights squeezed)
        stages.{i}.blocks.{j}.gamma         -> stages.{i}.{j}.gamma
        head.norm / head.fc                 -> norm / head

    timm's atto..nano configs use `conv_mlp=True`: their fc1/fc2 are 1x1 convolutions with (out, in, 1, 1)
    weights, reshaped here to the Linear's (out, in). Keys of timm-only options (overlapping stems,
    `head.pre_logits`, ...) have no counterpart and raise a ValueError listing them.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        parts = key.split(".")
        new = None
        if parts[0] == "stem" and len(parts) == 3 and parts[1] in ("0", "1"):
            new = f"downsample_layers.0.{parts[1]}.{parts[2]}"
        elif parts[0] == "stages" and len(parts) >= 4 and parts[2] == "downsample" and parts[3] in ("0", "1"):
            new = f"downsample_layers.{parts[1]}.{'.'.join(parts[3:])}"
        elif parts[0] == "stages" and len(parts) >= 5 and parts[2] == "blocks":
            i, j, rest = parts[1], parts[3], ".".join(parts[4:])
            rename = {"conv_dw.weight": "dwconv.weight", "conv_dw.bias": "dwconv.bias",
                      "norm.weight": "norm.weight", "norm.bias": "norm.bias", "gamma": "gamma",
                      "mlp.fc1.weight": "pwconv1.weight", "mlp.fc1.bias": "pwconv1.bias",
                      "mlp.fc2.weight": "pwconv2.weight", "mlp.fc2.bias": "pwconv2.bias"}
            if rest in rename:
                new = f"stages.{i}.{j}.{rename[rest]}"
                if rest.startswith("mlp.fc") and rest.endswith("weight") and value.ndim == 4:
                    value = value.reshape(value.shape[0], value.shape[1])   # (out, in, 1, 1) -> (out, in)
        elif key in ("head.norm.weight", "head.norm.bias"):
            new = "norm." + parts[-1]
        elif key in ("head.fc.weight", "head.fc.bias"):
            new = "head." + parts[-1]
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"convert_timm: {len(unknown)} timm keys have no counterpart in the paper's ConvNeXt "
                         f"(timm-only options such as an overlapping stem or a head MLP?): {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------------------------
# Named variants and the paper's numbers
# ----------------------------------------------------------------------------------------------------------
# name: (depths, dims). atto..nano: timm's small configs [not in paper]; T..XL: §3.1.
CONFIGS = {
    "convnext_atto":   ((2, 2, 6, 2), (40, 80, 160, 320)),
    "convnext_femto":  ((2, 2, 6, 2), (48, 96, 192, 384)),
    "convnext_pico":   ((2, 2, 6, 2), (64, 128, 256, 512)),
    "convnext_nano":   ((2, 2, 8, 2), (80, 160, 320, 640)),
    "convnext_tiny":   ((3, 3, 9, 3), (96, 192, 384, 768)),        # ConvNeXt-T
    "convnext_small":  ((3, 3, 27, 3), (96, 192, 384, 768)),       # ConvNeXt-S
    "convnext_base":   ((3, 3, 27, 3), (128, 256, 512, 1024)),     # ConvNeXt-B
    "convnext_large":  ((3, 3, 27, 3), (192, 384, 768, 1536)),     # ConvNeXt-L
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),    # ConvNeXt-XL
}

# Table 1 (and the authors' README), 1000 classes, 224 x 224: parameters and "FLOPs" (= GMACs), as printed.
PAPER_PARAMS = {"convnext_tiny": 28e6, "convnext_small": 50e6, "convnext_base": 89e6, "convnext_large": 198e6,
                "convnext_xlarge": 350e6}
PAPER_GFLOPS = {"convnext_tiny": 4.5, "convnext_small": 8.7, "convnext_base": 15.4, "convnext_large": 34.4,
                "convnext_xlarge": 60.9}
# 384 x 384 (Table 1 for B/L/XL; the authors' README for T/S, ImageNet-22K-pretrained models at 384).
PAPER_GFLOPS_384 = {"convnext_tiny": 13.1, "convnext_small": 25.5, "convnext_base": 45.0, "convnext_large": 101.0,
                    "convnext_xlarge": 179.0}
# Our exact counts (this file, 1000 classes): asserted in tests/test_convnext.py, equal to timm's.
PARAMS = {"convnext_atto": 3_695_520, "convnext_femto": 5_217_784, "convnext_pico": 9_045_672,
          "convnext_nano": 15_593_560, "convnext_tiny": 28_589_128, "convnext_small": 50_223_688,
          "convnext_base": 88_591_464, "convnext_large": 197_767_336, "convnext_xlarge": 350_196_968}


def _factory(name: str):
    depths, dims = CONFIGS[name]

    def build(num_classes: int = 1000, img_size: int = 224, **kwargs) -> ConvNeXt:
        cfg = dict(depths=depths, dims=dims)
        cfg.update(kwargs)                                  # e.g. depths=(1, 1, 1, 1) for a quick test
        return ConvNeXt(num_classes=num_classes, img_size=img_size, **cfg)

    build.__name__ = name
    build.__doc__ = f"{name}: depths {depths}, dims {dims}, 7x7 depthwise kernels. kwargs go to ConvNeXt."
    return build


convnext_atto = _factory("convnext_atto")
convnext_femto = _factory("convnext_femto")
convnext_pico = _factory("convnext_pico")
convnext_nano = _factory("convnext_nano")
convnext_tiny = _factory("convnext_tiny")
convnext_small = _factory("convnext_small")
convnext_base = _factory("convnext_base")
convnext_large = _factory("convnext_large")
convnext_xlarge = _factory("convnext_xlarge")

MODELS = {
    "convnext_atto": convnext_atto, "convnext_femto": convnext_femto, "convnext_pico": convnext_pico,
    "convnext_nano": convnext_nano, "convnext_tiny": convnext_tiny, "convnext_small": convnext_small,
    "convnext_base": convnext_base, "convnext_large": convnext_large, "convnext_xlarge": convnext_xlarge,
}

"""Token Fusion: CNN feature-map tokens fused with ViT patch tokens (late, early, layer by layer).

Paper: Keong-Hun Choi, Jin-Woo Kim, Yao Wang, Jong-Eun Ha, "Improved Image Classification with Token
Fusion", arXiv 2208.09183 (IEEE Access 2023). No public code exists and the figures are missing from the
text we have, so everything below the level of the prose is a reconstruction (listed in full further down).

The idea. A ViT turns an image into *patch tokens* (Eq. 1); a CNN turns it into feature maps, and the
paper treats **every pixel of a ResNet-101 feature map as a token** too ("We treat feature maps by the
ResNet-101 model as images. Each pixel on a feature map is considered a token in Equation (1)"). The two
kinds of tokens carry different information (local, from convolution; global, from attention), and the paper
fuses them at three points: (1) *late*, after two parallel transformer encoders; (2) *early*, before one
transformer, by turning the ResNet stages back into image channels; (3) *layer by layer*, inside the
transformer, once per ResNet stage. No class token is used: all tokens are pooled by one of three heads
(token-wise, channel-wise, or both "mixing"). The layer-by-layer model with the channel-wise head is the
paper's best (87.77% top-1 on ImageNet-1K, 140M parameters, Tables 1-3).

Section / equation map
----------------------
* Method, Eq. 1 (patch tokens ``x_p E + E_pos``)       -> ``PatchEmbed`` + ``pos_embed`` in every model
* Method, "each pixel on a feature map is a token"     -> ``ResNetStages`` + 1x1 convs (Eq. 1 with P = 1)
* Method, Eq. 2-3 (pre-norm MHSA + MLP blocks)          -> ``Attention``, ``Block``, ``blocks``
* Method 1, Fig. 2(a) (two parallel encoders)           -> ``LateTokenFusion``
* Method 1, Fig. 2(b) (UpConv x4 on ViT tokens, concat) -> ``LateFusionBlock``
* Method 2, Fig. 3(a) (unified H x W x 18 map -> ViT)   -> ``EarlyTokenFusion``
* Method 2, Fig. 3(b) (bridge: UpConv + 1x1 conv)       -> ``BridgeBlock``
* Method 3, Fig. 4(a) (5 mixing blocks + 2 blocks)      -> ``LayerTokenFusion``
* Method 3, Fig. 4(b) (transformer || CNN stage, concat)-> ``MixingBlock``, ``StageTokens``
* "Image Classification Head", Fig. 5(a)/(b)/(c)       -> ``PoolingHead(kind="token"/"channel"/"mixing")``
* "UpConv" (Figs. 2-4)                                  -> ``up_conv``: ``nn.ConvTranspose2d``, kernel = stride
* Table 4 / Fig. 6 (late: copy vs UpConv, add vs concat)-> ``LateTokenFusion(upsample=..., combine=...)``
* Table 4 / Fig. 7 (early: copy, single bridge)        -> ``EarlyTokenFusion(upsample=..., bridges=...)``
* Table 4 / Fig. 8 (layer: a class token kept out of
  the mixing blocks' combining)                         -> ``LayerTokenFusion(class_token=True)``
* attention maps (not in the paper; for the notebook)  -> ``attention_maps(model, x)``: {name: (B, h, N, N)}

Every line that is not the paper's says so where it stands: ``# [not in paper: ...]`` (our addition) or
``# [paper silent: ...]`` (the paper leaves it open; our choice). Input checks, the naive/fast switch and
the frozen-trunk option are repository plumbing, marked as such.

What differs from the paper or the authors' code, and why
---------------------------------------------------------
There is no authors' code, so "differs" means: from the paper's prose, or from what its numbers imply.

1. Weights: the paper always starts from an ImageNet-pretrained ResNet-101. Here ``pretrained_cnn=False``
   is the default so that building a model never touches the network (tests, CI, smoke mode);
   ``pretrained_cnn=True`` loads torchvision's ``ResNet101_Weights.IMAGENET1K_V2`` (needs the internet).
   The ViT part is always trained from scratch, as the paper implies (only ResNet-101 is called pretrained).
2. The late-fusion CNN runs ResNet-101 with layer3/layer4's strides replaced by dilation (torchvision's
   ``replace_stride_with_dilation``, as in DeepLab), so its last map is at stride 8 (28 x 28 at 224). The
   paper says the ViT tokens are "expanded four times by using UpConv" to match the CNN tokens; a 2 x 2
   UpConv turns each of the 14 x 14 ViT-B/16 tokens into four, i.e. 28 x 28, and an undilated ResNet-101
   ends at 7 x 7, which an *expansion* could never match. Dilation keeps the whole pretrained ResNet-101
   (its weights load unchanged), which the paper uses and which the "similar size" of the three models
   needs; the price is compute (the dilated trunk is 33.9 GMACs instead of 7.8). The alternative reading,
   tokens from layer2 (also 28 x 28), would drop layer3/4 and 41M parameters. (The CNN tokens sit at stride
   patch_size / 2; ``patch_size=8``, for small configurations, dilates layer2 too: stride 4.)
3. Sizes that match across streams are made to match exactly: ``img_size`` must be a multiple of 32 and of
   ``patch_size`` (so every ResNet map lines up with the patch grid). The paper only uses 224.
4. ``num_classes`` and ``img_size`` are free (the paper: 1000 classes, 224 x 224). The token-wise head's
   linear layer has one input per token, so the model is built for one image size.
5. Small configurations for tests and CPU training are not in the paper: ``embed_dim``/``num_heads``, and
   a trunk of ResNet-101's shape but fewer blocks (``cnn_layers``), thinner 3x3 convs (``cnn_width``) and
   fewer channels (``cnn_base``). The defaults are the paper's model.
6. The 140M match below is **fitted by construction**, not evidence: the paper gives one number, and the
   open choices (ViT-B, average pooling rather than a strided conv in the mixing blocks, one UpConv, 3
   channels per bridge) were taken partly *because* they land near 140M. It shows that the reading is
   consistent with the paper's size, not that it is the authors' architecture.

What the paper leaves open (each choice and why)
------------------------------------------------
Shared:
* ViT: ViT-B/16 (D = 768, 12 heads, MLP 3072, pre-norm Eq. 2-3, GELU, qkv bias, learned ``E_pos``; its
  final LayerNorm moved into the head, below). Why: the paper says "12 transformer blocks" and "like the
  ViT"; ViT-B is the ViT whose size, with ResNet-101, lands on the paper's 140M (see the parameter table).
* "Five stages of ResNet-101" are He et al.'s conv1, conv2_x (max-pool + layer1), conv3_x, conv4_x,
  conv5_x: 64/256/512/1024/2048 channels at strides 2/4/8/16/32. Its ``fc`` and average pool are dropped.
* "Each pixel is a token" = Eq. 1 with a 1-pixel patch: a 1x1 convolution to D (the trainable E).
* Heads (Fig. 5): captions read "(a) average pooling by data depth, (b) average pooling by token". So the
  token-wise head averages each token over its D channels (one number per token, a vector of N) and the
  channel-wise head averages each channel over the N tokens (one number per channel, the usual GAP, a
  vector of D); "mixing" (c) concatenates both vectors; each is followed by a LayerNorm and one Linear.
  Default heads are each method's best in Table 1: mixing (late), mixing (early), channel-wise (layer).
* Where the final LayerNorm goes. Eq. 2-3 end without one; ViT's (its Eq. 4, y = LN(z_L^0)) normalises
  the class token, which this paper drops. Here the head pools Eq. 3's output and then applies LayerNorm
  to the pooled vector (ViT's Eq. 4 with the pooled vector for z_L^0; timm's ``fc_norm`` for its
  average-pooling ViTs does the same). Rejected: ViT's per-token LayerNorm *before* pooling. It makes the
  token-wise head dead: mean_c(gamma_c t_hat_c + beta_c) is mean(beta) at initialisation (gamma = 1,
  t_hat zero-mean over channels), identical for every token and image. An earlier version of this file
  did this (the early and layer models' token-wise heads were dead; the late model's survived only because
  its UpConv follows the norm); the notebook prints the pooled values' spread both ways, 1.8e-08 vs
  1.7e-03. The late model's two encoders likewise end without a LayerNorm; their raw outputs are fused.
  One consequence, tested: a token-wise head's LayerNorm over the N token means ignores any vector added
  to every token alike, so the last bias before it (e.g. the last block's MLP output bias) gets no
  gradient from that head; it is redundant there, like a bias before a BatchNorm.
* Initialisation: truncated normal (std 0.02) for linear layers and positional embeddings (ViT/DeiT);
  torchvision's own initialisation (or the pretrained weights) for ResNet-101; PyTorch defaults for the
  fusion convolutions.
Method 1 (late):
* The 12 blocks are split 6 + 6 between the ViT encoder and the CNN-token encoder (parallel, same size).
* CNN tokens: 1x1 conv 2048 -> 768 of the stride-8 map plus their own learned ``E_pos`` (Eq. 1, P = 1).
* UpConv = ``nn.ConvTranspose2d(D, D, kernel_size=2, stride=2)`` on the ViT encoder's output; fusion =
  channel concatenation per position (that is why the sizes must match; a sequence concatenation would not
  need it), giving 784 tokens of width 2D, pooled by the head.
* Rejected reading: ViT-B/32 (7 x 7 tokens), UpConv x2 to 14 x 14, and CNN tokens from layer3 (stride 16,
  14 x 14), no dilation. It also fits "expanded four times", but it drops layer4 (15.0M of the pretrained
  ResNet-101 the paper says it uses) and lands at 120.02M (mixing head; 18.16 GMACs), 14% below the two
  other methods' 139-140M, against "all models were configured to have a similar size"; ViT-B/16 is also
  the ViT the 140M of the best model needs. What we pay instead is compute (dilated trunk, 784 tokens).
* Table 4 variants: ``upsample="copy"`` repeats each ViT token 2 x 2 (nearest neighbour, no weights);
  ``combine="add"`` sums the two D-wide token maps instead of concatenating.
Method 2 (early):
* "A unified token of size H x W x 18" = the RGB image (3 channels) concatenated with five bridge outputs of
  3 channels each (3 + 5 x 3 = 18): each bridge brings its stage back to H x W and to 3 channels, so the
  unified map is an 18-channel image, patchified by Eq. 1 (16 x 16 patches) into a ViT-B.
* Bridge (Fig. 3(b), "concatenation after Up-Conv and 1x1 convolution", in that order): UpConv =
  ``nn.ConvTranspose2d(C_i, 3, kernel = stride = stride_i)`` (2, 4, 8, 16, 32) then a 1x1 conv 3 -> 3. The 1x1
  after a linear UpConv can be folded into it, but the text names both and it costs 12 weights; it becomes
  the channel reduction C_i -> 3 in the copy variant. No normalisation or activation (none is mentioned).
  (UpConv is PyTorch's ``nn.ConvTranspose2d`` throughout. A hand-written einsum version was measured at
  1.6x less time summed over the seven UpConv shapes of the three models, 3.6x for the x16/x32 bridges, but
  only 1.09x for a whole early-model step at 224 on CPU (3.74 s vs 4.06 s, batch 2, forward + backward), so
  it was removed.)
* Table 4 variants: ``upsample="copy"`` (nearest-neighbour copy, then 1x1 C_i -> 3; computed as 1x1 then
  copy, which is identical because a 1x1 conv acts per pixel: ``BridgeBlock.naive`` keeps the paper's
  order and a test checks both agree); ``bridges="single"`` keeps only the last stage's bridge ("using only
  one bridge block, and connecting only the last weight data"), giving a 3 + 3 = 6-channel map.
* Rejected reading: a chained, U-Net-style decoder (stage 5 up-convolved and concatenated with stage 4,
  1x1 conv, up again, ..., the last bridge reaching H x W with 18 channels). "The result of the
  corresponding stage ... is generated as one token through concatenation" allows it, and it is the more
  common design. We read five parallel bridges because 18 = 3 (the image, "the original image itself") +
  5 x 3 falls out of it with no free width, and "single bridge ... connecting only the last weight data"
  (Table 4) reads naturally as dropping four of five parallel bridges; a chained decoder's 18 would be an
  arbitrary width. Without the figure this is a judgement call, not a derivation.
Method 3 (layer by layer):
* 12 blocks = 5 mixing blocks x 2 transformer blocks + 2 final blocks ("after going through 5 mixing
  blocks, pass through two transformer blocks"; "all three models ... 12 transformer blocks").
* Mixing block i: the token stream goes through its 2 transformer blocks while the CNN stream goes through
  ResNet stage i, in parallel; the stage's map becomes 14 x 14 tokens of width D (``StageTokens``: 1x1 conv
  to D, then average pooling for strides 2/4/8 (8x8, 4x4, 2x2), nothing for stride 16, and a 2 x 2 UpConv
  (D -> D) for stride 32); the two token maps are concatenated per position (2D) and "integrated" by a
  Linear 2D -> D. The average pool is applied before the 1x1 conv (identical, both are linear per pixel;
  cheaper). Pooling, not a strided "patchify" conv, because the latter adds 7.8M parameters and overshoots
  the paper's 140M by 6%.
* The CNN stream is an unmodified ResNet-101: fusion flows CNN -> tokens only, so pretrained weights keep
  their meaning ("the feature values generated through the ResNet-101 model" are what is combined).
* CNN tokens get no positional embedding of their own: they are concatenated with the patch token at the
  same position, which already carries ``E_pos``.
* Table 4 variant: ``class_token=True`` prepends a learned class token (with its own ``E_pos``) that takes
  part in attention but is left out of every mixing block's concatenation (Fig. 8); the pooling heads then
  pool over it with the other tokens (the paper reports all three heads for this variant).

Parameters (1000 classes, 224 x 224; counted by ``tests/test_token_fusion.py`` on the meta device)
-------------------------------------------------------------------------------------------------
The paper gives one number: 140M for its best model (layer by layer, channel-wise head; Tables 2-3), and
says the three methods were "configured to have a similar size".

========================= ============ ============ ============ =========== ==============
model                      token-wise   channel-wise mixing       paper       GMACs (total)
========================= ============ ============ ============ =========== ==============
token_fusion_late           133.62M      134.37M      135.16M     "similar"   83.38
token_fusion_early          138.63M      139.20M      139.40M     "similar"   26.44
token_fusion_layer          139.76M      140.33M      140.53M     140M        26.90
========================= ============ ============ ============ =========== ==============

(GMACs: every matmul/conv, attention products included, ``common.flops.count_macs(...)["total"]``; the
three heads differ by < 0.002 GMACs. A thop/ptflops-style counter, which only sees ``nn.Linear``/``nn.Conv``
modules (so not attention's two matmuls), would report late 77.36, early 25.73, layer 26.19. The paper
reports no FLOPs. The late model is 3x the others because its CNN encoder attends
over 784 tokens and its ResNet-101 runs dilated at stride 8.)

Budget of the default layer model: ResNet-101 trunk 42.50M + 12 ViT-B blocks 85.05M + patch embedding 0.59M
+ E_pos 0.15M + five 1x1 stage projections 3.00M + one UpConv 2.36M + five 2D -> D integrations 5.90M +
channel-wise head (LayerNorm 1,536 + Linear 769,000) 0.77M = 140,330,536 = 140.33M (paper: 140M, +0.24%;
fitted by construction, see "What differs" 6). The exact counts of all nine combinations are pinned in the
tests; the head's share differs: token-wise LN(N) + Linear(N), mixing LN(N + D) + Linear(N + D).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

__all__ = ["LateTokenFusion", "EarlyTokenFusion", "LayerTokenFusion", "PoolingHead", "attention_maps",
           "MODELS", "PAPER_PARAMS", "PAPER_TOP1", "HEADS"]

# Tables 2 and 3: "Ours" (layer by layer, channel-wise head) has 140M parameters. The other two methods are
# only said to be of "similar size".
PAPER_PARAMS = {"token_fusion_layer": 140e6}
# Table 1, top-1 on ImageNet-1K (%), for the notebook and the README.
PAPER_TOP1 = {("late", "token"): 85.51, ("late", "channel"): 85.73, ("late", "mixing"): 86.29,
              ("early", "token"): 83.01, ("early", "channel"): 84.94, ("early", "mixing"): 85.27,
              ("layer", "token"): 86.97, ("layer", "channel"): 87.77, ("layer", "mixing"): 87.32}
HEADS = ("token", "channel", "mixing")
RESNET101_LAYERS = (3, 4, 23, 3)


# --------------------------------------------------------------------------------------------------------
# Input checks [not in paper: repository plumbing]. They must run before anything deep fails, so they stay
# in the forward; torch.fx.wrap keeps them one opaque call when the model is FX-traced
# (create_feature_extractor), because a Python `if` on a traced shape cannot be traced.
# --------------------------------------------------------------------------------------------------------
def _check_images(x, img_size: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (B, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ValueError(f"expected a batch of images (B, 3, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels (B, 3, H, W), got {x.shape[1]} channels in shape "
                         f"{tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float images, got dtype {x.dtype}; convert with x.float() / 255 and "
                        f"normalise (ImageNet mean/std) first")
    if tuple(x.shape[-2:]) != (img_size, img_size):
        raise ValueError(f"this model was built for {img_size} x {img_size} images, got "
                         f"{x.shape[-2]} x {x.shape[-1]}; resize the input or rebuild with "
                         f"img_size={x.shape[-2]}")


torch.fx.wrap("_check_images")


def _check_config(img_size: int, patch_size: int, embed_dim: int, num_heads: int, head: str,
                  num_classes: int) -> None:
    if not isinstance(img_size, int) or img_size <= 0 or img_size % 32:
        raise ValueError(f"img_size must be a positive multiple of 32 (ResNet-101's total stride, so that "
                         f"every feature map lines up with the patch grid), got {img_size!r}")
    if not isinstance(patch_size, int) or patch_size <= 0 or img_size % patch_size:
        raise ValueError(f"patch_size must divide img_size={img_size}, got {patch_size!r}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS} (Fig. 5: token-wise, channel-wise, both), got {head!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# --------------------------------------------------------------------------------------------------------
# The two token types
# --------------------------------------------------------------------------------------------------------
class ResNetStages(nn.Module):
    """torchvision's ResNet (Bottleneck blocks) cut into He et al.'s five stages, without avgpool/fc.

    ``stages[0]`` conv1 (+BN+ReLU) stride 2; ``stages[1]`` max-pool + layer1 stride 4; ``stages[2..4]``
    layer2..4 strides 8/16/32. ``dilate`` = three flags for layer2..4 (torchvision's
    ``replace_stride_with_dilation``): a dilated stage keeps its input's stride (the late-fusion model).
    ``layers=(3, 4, 23, 3)``, ``width=64``, ``base=64`` are ResNet-101. Smaller values give a small trunk of
    the same shape for tests and CPU training: ``layers`` blocks per stage, ``width`` the 3x3 convs' width
    per 64 (torchvision's ``width_per_group``), ``base`` the stem width (channels base, 4*base, ..., 32*base;
    rebuilt with torchvision's own ``ResNet._make_layer``).
    """

    def __init__(self, layers: Sequence[int] = RESNET101_LAYERS, width: int = 64, pretrained: bool = False,
                 dilate: tuple[bool, bool, bool] = (False, False, False), base: int = 64):
        super().__init__()
        layers = tuple(layers)
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"cnn_layers must be four positive ints (blocks per ResNet stage), got {layers!r}")
        if not isinstance(base, int) or base < 4 or not isinstance(width, int) or width < 1:
            raise ValueError(f"cnn_base must be an int >= 4 and cnn_width an int >= 1, got {base!r}, {width!r}")
        dil = list(dilate)
        if pretrained:
            if layers != RESNET101_LAYERS or width != 64 or base != 64:
                raise ValueError("pretrained_cnn=True loads ResNet-101's ImageNet weights, which need "
                                 f"cnn_layers={RESNET101_LAYERS}, cnn_width=64 and cnn_base=64; got "
                                 f"{layers}, {width}, {base}")
            # The paper: "We use a pre-trained ResNet-101". Downloads (once, into the torch hub cache).
            r = torchvision.models.resnet101(weights=torchvision.models.ResNet101_Weights.IMAGENET1K_V2,
                                             replace_stride_with_dilation=dil)
        else:  # [not in paper: random init by default, so that building a model never downloads]
            r = ResNet(Bottleneck, list(layers), width_per_group=width, replace_stride_with_dilation=dil)
        if base != 64:  # [not in paper: a thinner trunk of the same structure, small configurations only]
            r.inplanes, r.dilation = base, 1
            r.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
            r.bn1 = nn.BatchNorm2d(base)
            r.layer1 = r._make_layer(Bottleneck, base, layers[0])
            r.layer2 = r._make_layer(Bottleneck, 2 * base, layers[1], stride=2, dilate=dil[0])
            r.layer3 = r._make_layer(Bottleneck, 4 * base, layers[2], stride=2, dilate=dil[1])
            r.layer4 = r._make_layer(Bottleneck, 8 * base, layers[3], stride=2, dilate=dil[2])
            for m in r.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # [paper silent: "five stages" read as He et al.'s conv1, conv2_x, ..., conv5_x]
        self.stages = nn.ModuleList([
            nn.Sequential(r.conv1, r.bn1, r.relu),   # conv1:   (B, 64, H/2, W/2)
            nn.Sequential(r.maxpool, r.layer1),      # conv2_x: (B, 256, H/4, W/4)
            r.layer2,                                # conv3_x: (B, 512, H/8, W/8)
            r.layer3,                                # conv4_x: (B, 1024, H/16, W/16)
            r.layer4,                                # conv5_x: (B, 2048, H/32, W/32)
        ])
        self.channels = [base] + [layer[-1].bn3.num_features for layer in (r.layer1, r.layer2, r.layer3, r.layer4)]
        self.strides = [2, 4]
        for d in dil:
            self.strides.append(self.strides[-1] * (1 if d else 2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H / stride_i, W / stride_i)
            feats.append(x)
        return feats


class PatchEmbed(nn.Module):
    """Eq. 1: split into P x P patches, flatten, multiply by E (a P x P conv with stride P is exactly that)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                       # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)    # (B, N, D)


def copy_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Table 4's "copy": every pixel (token) repeated factor x factor times (nearest-neighbour upsampling)."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)  # (B, C, H*f, W*f)


def up_conv(in_chans: int, out_chans: int, factor: int) -> nn.ConvTranspose2d:
    """The paper's "UpConv" (Figs. 2-4): a transposed convolution.
    [paper silent: kernel = stride = factor, so every input pixel (token) becomes its own f x f block]"""
    return nn.ConvTranspose2d(in_chans, out_chans, factor, stride=factor)


def tokens_to_map(t: torch.Tensor, s: int) -> torch.Tensor:
    return t.transpose(1, 2).unflatten(2, (s, s))  # (B, N, D) -> (B, D, N) -> (B, D, s, s)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, D, s, s) -> (B, D, s*s) -> (B, s*s, D)


# --------------------------------------------------------------------------------------------------------
# The transformer (Eq. 2-3)
# --------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention (MHSA in Eq. 2). ``naive=True`` uses the textbook
    softmax(q k^T / sqrt(d)) v; the default uses ``F.scaled_dot_product_attention`` (same maths, fused); a
    test asserts they agree. ``keep_attn=True`` takes the naive path and stores the softmax map, detached,
    in ``self.last_attn``: shape (B, h, N, N) (N counts a class token if there is one)."""

    naive = False
    keep_attn = False

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # [paper silent: qkv bias, as in ViT]
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                       # each (B, h, N, d)
        if self.naive or self.keep_attn:
            attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)      # (B, h, N, N)
            attn = attn.softmax(dim=-1)                                      # (B, h, N, N)
            if self.keep_attn:
                self.last_attn = attn.detach()
            out = attn @ v                                                   # (B, h, N, d)
        else:
            out = F.scaled_dot_product_attention(q, k, v)                    # (B, h, N, d)
        return self.proj(out.transpose(1, 2).flatten(2))                     # (B, N, h, d) -> (B, N, D)


class Block(nn.Module):
    """Eq. 2: t' = MHSA(LN(t)) + t;  Eq. 3: t = MLP(LN(t')) + t'  (pre-norm ViT block)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # [paper silent: eps 1e-6 as in ViT]
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)  # [paper silent: MLP ratio 4 and GELU, as in ViT]
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t + self.attn(self.norm1(t))    # Eq. 2, (B, N, D)
        return t + self.mlp(self.norm2(t))  # Eq. 3, (B, N, D)


def blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float) -> nn.Sequential:
    """``depth`` blocks, Eq. 2-3 repeated. No final LayerNorm here: the paper's equations end at Eq. 3 and
    the one normalisation ViT applies after its last block (its Eq. 4, on the class token) sits in the head,
    after pooling (``PoolingHead``)."""
    return nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])


def attention_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` once without gradients and return every attention map, keyed by the module's
    qualified name (``"encoder.3.attn"``, ...): softmax maps (B, h, N, N). Flags are restored afterwards."""
    mods = {name: m for name, m in model.named_modules() if hasattr(m, "keep_attn")}
    old = {name: m.keep_attn for name, m in mods.items()}
    try:
        for m in mods.values():
            m.keep_attn = True
        with torch.no_grad():
            model(x)
        return {name: m.last_attn for name, m in mods.items() if hasattr(m, "last_attn")}
    finally:
        for name, m in mods.items():
            m.keep_attn = old[name]
            if "last_attn" in m.__dict__:
                del m.last_attn


# --------------------------------------------------------------------------------------------------------
# Classification heads (Fig. 5)
# --------------------------------------------------------------------------------------------------------
class PoolingHead(nn.Module):
    """Fig. 5. No class token: all tokens of the last block (Eq. 3's output) are pooled.

    * ``"token"`` (Fig. 5(a), "average pooling by data depth"): each token averaged over its D channels
      -> (B, N).
    * ``"channel"`` (Fig. 5(b), "average pooling by token"): each channel averaged over the N tokens
      -> (B, D).
    * ``"mixing"`` (Fig. 5(c), "combined pooling data from each process"): both vectors concatenated
      -> (B, N + D).

    Then LayerNorm of the pooled vector and one Linear to the classes: ViT's Eq. 4, y = LN(z_L^0), with the
    pooled vector in place of the class token. Pooling comes first because a per-token LayerNorm before it
    would kill the token-wise head: the mean over channels of LN(t) is mean(beta) + mean(gamma * t_hat),
    exactly mean(beta) at initialisation (gamma = 1 and t_hat has zero mean), the same number for every
    token and image. ``tests/test_token_fusion.py`` checks that the logits differ across inputs and the
    head gets a gradient at initialisation.
    """

    def __init__(self, num_tokens: int, dim: int, num_classes: int, kind: str = "channel"):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        self.kind = kind
        in_features = {"token": num_tokens, "channel": dim, "mixing": num_tokens + dim}[kind]
        self.norm = nn.LayerNorm(in_features, eps=1e-6)  # [paper silent: ViT's final LN, moved after pooling]
        self.fc = nn.Linear(in_features, num_classes)

    def pool(self, t: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.kind in ("token", "mixing"):
            parts.append(t.mean(dim=2))  # Fig. 5(a): (B, N, D) -> (B, N)
        if self.kind in ("channel", "mixing"):
            parts.append(t.mean(dim=1))  # Fig. 5(b): (B, N, D) -> (B, D)
        return torch.cat(parts, dim=1)   # (B, N), (B, D) or (B, N + D)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.pool(t)))  # (B, classes)


# --------------------------------------------------------------------------------------------------------
# Shared model plumbing [not in paper: frozen-trunk option, naive switch, initialisation, forward split]
# --------------------------------------------------------------------------------------------------------
class _TokenFusionBase(nn.Module):
    """forward = forward_head(forward_features(x)); freezing; naive switches; initialisation."""

    def _setup_cnn(self, layers, width, base, pretrained, freeze, dilate=(False, False, False)) -> None:
        self.cnn = ResNetStages(layers, width, pretrained, dilate, base)
        self.freeze_cnn = bool(freeze)  # [paper silent: whether the trunk is fine-tuned; default: it trains]
        if self.freeze_cnn:
            for p in self.cnn.parameters():
                p.requires_grad_(False)
            self.cnn.eval()

    def _init_weights(self) -> None:
        # [paper silent: ViT/DeiT initialisation (trunc. normal 0.02) outside the (possibly pretrained) ResNet]
        cnn = set(id(m) for m in self.cnn.modules())
        for m in self.modules():
            if id(m) in cnn:
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.startswith("pos_") or name == "cls_token":
                nn.init.trunc_normal_(p, std=0.02)

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "freeze_cnn", False):
            self.cnn.eval()  # a frozen trunk keeps its BatchNorm statistics
        return self

    def set_naive(self, naive: bool = True) -> "_TokenFusionBase":
        """Switch every module that has a naive reference path (attention, copy bridges) to it; the
        equivalence tests need one switch for the whole model."""
        for m in self.modules():
            if hasattr(type(m), "naive"):
                m.naive = naive
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, classes)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, D') tokens from ``forward_features`` -> (B, num_classes) logits (Fig. 5 head)."""
        return self.head(features)


# --------------------------------------------------------------------------------------------------------
# Method 1: late token fusion with a parallel structure (Fig. 2)
# --------------------------------------------------------------------------------------------------------
class LateFusionBlock(nn.Module):
    """Fig. 2(b): UpConv expands each ViT token into 2 x 2 = four ("expanded four times"), then the ViT and
    CNN token maps are concatenated per position. Table 4 / Fig. 6: ``copy`` instead of UpConv, ``add``
    instead of concatenation."""

    def __init__(self, dim: int, factor: int, upsample: str = "upconv", combine: str = "concat"):
        super().__init__()
        if upsample not in ("upconv", "copy"):
            raise ValueError(f"upsample must be 'upconv' or 'copy' (Table 4), got {upsample!r}")
        if combine not in ("concat", "add"):
            raise ValueError(f"combine must be 'concat' or 'add' (Table 4), got {combine!r}")
        self.factor, self.upsample, self.combine = factor, upsample, combine
        self.up = up_conv(dim, dim, factor) if upsample == "upconv" and factor > 1 else None

    def expand(self, t_vit: torch.Tensor, s: int) -> torch.Tensor:
        x = tokens_to_map(t_vit, s)            # (B, N, D) -> (B, D, s, s)
        if self.up is not None:
            x = self.up(x)                     # (B, D, f*s, f*s)
        elif self.factor > 1:
            x = copy_upsample(x, self.factor)  # (B, D, f*s, f*s)
        return map_to_tokens(x)                # (B, f^2 N, D)

    def forward(self, t_vit: torch.Tensor, t_cnn: torch.Tensor, s: int) -> torch.Tensor:
        t_vit = self.expand(t_vit, s)                  # (B, 4N, D)
        if self.combine == "add":
            return t_vit + t_cnn                       # (B, 4N, D)
        # [paper silent: "concatenation" read as per position (channels); only that needs equal sizes]
        return torch.cat([t_vit, t_cnn], dim=2)        # (B, 4N, 2D)


class LateTokenFusion(_TokenFusionBase):
    """Method 1 (Fig. 2). Two parallel transformer encoders, one on ViT patch tokens (14 x 14 at 224), one
    on ResNet-101 pixel tokens (28 x 28, the dilated trunk's stride-8 map), fused after both.

    ``forward_features`` returns the fused tokens (B, 4N, 2D) (``combine="add"``: (B, 4N, D)), N = (H/P)^2.
    """

    def __init__(self, num_classes: int = 1000, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 head: str = "mixing", upsample: str = "upconv", combine: str = "concat",
                 cnn_layers: Sequence[int] = RESNET101_LAYERS, cnn_width: int = 64, cnn_base: int = 64,
                 pretrained_cnn: bool = False, freeze_cnn: bool = False):
        super().__init__()
        _check_config(img_size, patch_size, embed_dim, num_heads, head, num_classes)
        if patch_size not in (8, 16, 32, 64):
            raise ValueError(f"late fusion needs patch_size 8, 16, 32 or 64: the CNN tokens sit at stride "
                             f"patch_size / 2 (4, 8, 16 or 32, by dilating ResNet's last stages) so that "
                             f"UpConv x2 matches them; got {patch_size}")
        if depth % 2 or depth < 2:
            raise ValueError(f"depth (blocks in total, split evenly between the two encoders) must be even, "
                             f"got {depth}")
        self.img_size, self.patch_size, self.num_classes = img_size, patch_size, num_classes
        cnn_stride = patch_size // 2
        # [not in paper: the last stages dilated (DeepLab-style) so the CNN map is 2x the ViT grid]
        dilate = {4: (True, True, True), 8: (False, True, True), 16: (False, False, True),
                  32: (False, False, False)}[cnn_stride]
        self._setup_cnn(cnn_layers, cnn_width, cnn_base, pretrained_cnn, freeze_cnn, dilate)
        self.grid = img_size // patch_size                 # s: ViT tokens per side (14 at 224)
        n_vit, n_cnn = self.grid ** 2, (2 * self.grid) ** 2  # 196 and 784 at 224
        D = embed_dim
        # ViT stream, Eq. 1.
        self.patch_embed = PatchEmbed(3, D, patch_size)
        self.pos_vit = nn.Parameter(torch.zeros(1, n_vit, D))
        self.vit_encoder = blocks(D, depth // 2, num_heads, mlp_ratio)  # [paper silent: 12 blocks split 6 + 6]
        # CNN stream: each pixel of the last map a token (Eq. 1 with P = 1).
        self.cnn_embed = nn.Conv2d(self.cnn.channels[-1], D, 1)  # "each pixel ... a token in Equation (1)"
        self.pos_cnn = nn.Parameter(torch.zeros(1, n_cnn, D))  # [paper silent: CNN tokens get their own E_pos]
        self.cnn_encoder = blocks(D, depth // 2, num_heads, mlp_ratio)
        self.fusion = LateFusionBlock(D, 2, upsample, combine)
        self.head = PoolingHead(n_cnn, 2 * D if combine == "concat" else D, num_classes, head)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> fused tokens (B, 4N, 2D) (or (B, 4N, D) with combine="add")."""
        _check_images(x, self.img_size)
        t_vit = self.patch_embed(x) + self.pos_vit                  # Eq. 1, (B, N, D)
        t_vit = self.vit_encoder(t_vit)                             # Eq. 2-3, (B, N, D)
        f = self.cnn(x)[-1]                                         # (B, 2048, H/8, W/8)
        t_cnn = map_to_tokens(self.cnn_embed(f)) + self.pos_cnn     # Eq. 1 with P = 1, (B, 4N, D)
        t_cnn = self.cnn_encoder(t_cnn)                             # Eq. 2-3, (B, 4N, D)
        return self.fusion(t_vit, t_cnn, self.grid)                 # (B, 4N, 2D)


# --------------------------------------------------------------------------------------------------------
# Method 2: early token fusion (Fig. 3)
# --------------------------------------------------------------------------------------------------------
class BridgeBlock(nn.Module):
    """Fig. 3(b): one ResNet stage back to image resolution and 3 channels, "Up-Conv and 1x1 convolution".

    ``upsample="upconv"``: ConvTranspose2d(C, 3, kernel=stride=factor) then a 1x1 conv 3 -> 3.
    ``upsample="copy"`` (Table 4): copy each pixel factor x factor times then a 1x1 conv C -> 3. Because a
    1x1 conv acts on each pixel alone, this equals 1x1 first and copy second, which needs factor^2 times
    less memory; that is the default path, ``naive=True`` runs the paper's order.
    """

    naive = False

    def __init__(self, in_chans: int, factor: int, out_chans: int = 3, upsample: str = "upconv"):
        super().__init__()
        if upsample not in ("upconv", "copy"):
            raise ValueError(f"upsample must be 'upconv' or 'copy' (Table 4), got {upsample!r}")
        self.factor, self.upsample = factor, upsample
        if upsample == "upconv":
            self.up = up_conv(in_chans, out_chans, factor)  # [paper silent: 3 channels per bridge, 3 + 5 x 3 = 18]
            self.proj = nn.Conv2d(out_chans, out_chans, 1)
        else:
            self.up = None
            self.proj = nn.Conv2d(in_chans, out_chans, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            return self.proj(self.up(f))                       # (B, C, h, w) -> (B, 3, H, W) -> (B, 3, H, W)
        if self.naive:
            return self.proj(copy_upsample(f, self.factor))    # (B, C, H, W) -> (B, 3, H, W)
        return copy_upsample(self.proj(f), self.factor)        # (B, 3, h, w) -> (B, 3, H, W)


class EarlyTokenFusion(_TokenFusionBase):
    """Method 2 (Fig. 3). The RGB image and five bridge outputs are concatenated into one H x W x 18 map,
    which a ViT-B/16 patchifies (Eq. 1) and encodes.

    ``forward_features`` returns the last block's tokens (B, N, D).
    """

    def __init__(self, num_classes: int = 1000, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 head: str = "mixing", upsample: str = "upconv", bridges: str = "multi",
                 bridge_chans: int = 3, cnn_layers: Sequence[int] = RESNET101_LAYERS, cnn_width: int = 64,
                 cnn_base: int = 64, pretrained_cnn: bool = False, freeze_cnn: bool = False):
        super().__init__()
        _check_config(img_size, patch_size, embed_dim, num_heads, head, num_classes)
        if bridges not in ("multi", "single"):
            raise ValueError(f"bridges must be 'multi' (all five stages) or 'single' (the last stage only, "
                             f"Table 4), got {bridges!r}")
        self.img_size, self.patch_size, self.num_classes = img_size, patch_size, num_classes
        self._setup_cnn(cnn_layers, cnn_width, cnn_base, pretrained_cnn, freeze_cnn)
        # [paper silent: five parallel bridges, one per stage, each straight to H x W (not a chained decoder)]
        self.bridge_stages = list(range(5)) if bridges == "multi" else [4]
        self.bridges = nn.ModuleList([BridgeBlock(self.cnn.channels[i], self.cnn.strides[i], bridge_chans,
                                                  upsample) for i in self.bridge_stages])
        self.unified_chans = 3 + bridge_chans * len(self.bridge_stages)  # 18 = 3 + 5 x 3 (Method 2)
        self.grid = img_size // patch_size
        n = self.grid ** 2
        self.patch_embed = PatchEmbed(self.unified_chans, embed_dim, patch_size)  # "regarded as an image"
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.encoder = blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.head = PoolingHead(n, embed_dim, num_classes, head)
        self._init_weights()

    def unified_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the unified "H x W x 18" map (B, 18, H, W) (6 channels with bridges="single")."""
        _check_images(x, self.img_size)
        feats = self.cnn(x)                                                    # 5 x (B, C_i, H/s_i, W/s_i)
        parts = [x] + [b(feats[i]) for b, i in zip(self.bridges, self.bridge_stages)]  # (B, 3, H, W) each
        return torch.cat(parts, dim=1)                                         # (B, 18, H, W)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens (B, N, D) after the last block (Eq. 3)."""
        t = self.patch_embed(self.unified_map(x)) + self.pos_embed            # Eq. 1, (B, N, D)
        return self.encoder(t)                                                 # Eq. 2-3, (B, N, D)


# --------------------------------------------------------------------------------------------------------
# Method 3: token fusion layer by layer (Fig. 4)
# --------------------------------------------------------------------------------------------------------
class StageTokens(nn.Module):
    """One ResNet stage's map as s x s tokens of width D, aligned with the patch grid: each pixel a token
    (1x1 conv = Eq. 1 with P = 1), average-pooled if the stage is finer than the patches, UpConv'd if it is
    coarser. (Pooling before the 1x1 conv equals pooling after it: both are linear, per pixel / per channel.)"""

    def __init__(self, in_chans: int, dim: int, stride: int, patch_size: int):
        super().__init__()
        # [paper silent: average pooling onto the patch grid for finer maps (a strided conv adds 7.8M)]
        self.pool = patch_size // stride if stride < patch_size else 1
        self.proj = nn.Conv2d(in_chans, dim, 1)
        f = stride // patch_size if stride > patch_size else 1
        self.up = up_conv(dim, dim, f) if f > 1 else None  # [paper silent: UpConv D -> D x2 for conv5_x]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            f = F.avg_pool2d(f, self.pool)  # (B, C, s, s)
        f = self.proj(f)                    # (B, D, s, s) (or (B, D, s/2, s/2) for stride 32)
        if self.up is not None:
            f = self.up(f)                  # (B, D, s, s)
        return map_to_tokens(f)             # (B, N, D)


class MixingBlock(nn.Module):
    """Fig. 4(b): a transformer (``blocks``) on the tokens and a CNN (ResNet stage i, run by the model on
    the CNN stream) side by side; their results are concatenated per token and integrated by a Linear
    2D -> D. A class token (``n_extra = 1``) is kept out of the concatenation (Fig. 8)."""

    def __init__(self, in_chans: int, stride: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 patch_size: int):
        super().__init__()
        self.blocks = blocks(dim, depth, num_heads, mlp_ratio)
        self.tokens = StageTokens(in_chans, dim, stride, patch_size)
        self.integrate = nn.Linear(2 * dim, dim)  # [paper silent: "integrated" read as a Linear 2D -> D]

    def forward(self, t: torch.Tensor, f: torch.Tensor, n_extra: int = 0) -> torch.Tensor:
        t = self.blocks(t)                                      # transformer: (B, n_extra + N, D)
        c = self.tokens(f)  # CNN stage as tokens, (B, N, D) [paper silent: no E_pos of their own]
        if n_extra:
            extra, patches = t[:, :n_extra], t[:, n_extra:]     # (B, 1, D), (B, N, D)
            fused = self.integrate(torch.cat([patches, c], dim=2))  # (B, N, 2D) -> (B, N, D)
            return torch.cat([extra, fused], dim=1)             # (B, 1 + N, D)
        return self.integrate(torch.cat([t, c], dim=2))         # (B, N, 2D) -> (B, N, D)


class LayerTokenFusion(_TokenFusionBase):
    """Method 3 (Fig. 4): five mixing blocks, one per ResNet-101 stage, then two transformer blocks.

    ``forward_features`` returns the tokens (B, N, D) (N + 1 with ``class_token=True``) after the last block.
    """

    def __init__(self, num_classes: int = 1000, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, blocks_per_mix: int = 2, final_blocks: int = 2, num_heads: int = 12,
                 mlp_ratio: float = 4.0, head: str = "channel", class_token: bool = False,
                 cnn_layers: Sequence[int] = RESNET101_LAYERS, cnn_width: int = 64, cnn_base: int = 64,
                 pretrained_cnn: bool = False, freeze_cnn: bool = False):
        super().__init__()
        _check_config(img_size, patch_size, embed_dim, num_heads, head, num_classes)
        if not _is_pow2(patch_size) or patch_size > 64:
            raise ValueError(f"layer-by-layer fusion pools or up-convolves ResNet maps (strides 2..32) onto the "
                             f"patch grid, so patch_size must be a power of two <= 64, got {patch_size}")
        if blocks_per_mix < 1 or final_blocks < 0:
            raise ValueError("blocks_per_mix must be >= 1 and final_blocks >= 0")
        self.img_size, self.patch_size, self.num_classes = img_size, patch_size, num_classes
        # [paper silent: 12 = 5 x 2 + 2, the only split of "12 blocks" into 5 mixing blocks and "two" more]
        self.depth = 5 * blocks_per_mix + final_blocks
        self._setup_cnn(cnn_layers, cnn_width, cnn_base, pretrained_cnn, freeze_cnn)
        self.grid = img_size // patch_size
        n = self.grid ** 2
        D = embed_dim
        self.patch_embed = PatchEmbed(3, D, patch_size)
        self.n_extra = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if class_token else None  # Table 4 variant only
        self.pos_embed = nn.Parameter(torch.zeros(1, n + self.n_extra, D))
        self.mixing = nn.ModuleList([
            MixingBlock(self.cnn.channels[i], self.cnn.strides[i], D, blocks_per_mix, num_heads, mlp_ratio,
                        patch_size) for i in range(5)])
        self.encoder = blocks(D, final_blocks, num_heads, mlp_ratio)
        self.head = PoolingHead(n + self.n_extra, D, num_classes, head)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens (B, N, D) (N + 1 with a class token) after the last block (Eq. 3)."""
        _check_images(x, self.img_size)
        t = self.patch_embed(x)                                     # Eq. 1, (B, N, D)
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)  # (B, 1 + N, D)
        t = t + self.pos_embed                                      # (B, n_extra + N, D)
        f = x
        for stage, mix in zip(self.cnn.stages, self.mixing):
            f = stage(f)                                            # CNN stream: (B, C_i, H/s_i, W/s_i)
            t = mix(t, f, self.n_extra)                             # token stream: (B, n_extra + N, D)
        return self.encoder(t)                                      # Eq. 2-3, (B, n_extra + N, D)


# --------------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------------
def token_fusion_late(num_classes: int = 1000, img_size: int = 224, head: str = "mixing", **kwargs):
    """Method 1, ViT-B/16 (6 + 6 blocks) || dilated ResNet-101; default head: mixing (Table 1's best)."""
    return LateTokenFusion(num_classes=num_classes, img_size=img_size, head=head, **kwargs)


def token_fusion_early(num_classes: int = 1000, img_size: int = 224, head: str = "mixing", **kwargs):
    """Method 2, ResNet-101 bridges -> 18-channel map -> ViT-B/16; default head: mixing (Table 1's best)."""
    return EarlyTokenFusion(num_classes=num_classes, img_size=img_size, head=head, **kwargs)


def token_fusion_layer(num_classes: int = 1000, img_size: int = 224, head: str = "channel", **kwargs):
    """Method 3, five mixing blocks + 2 blocks; default head: channel-wise (the paper's best, 140M)."""
    return LayerTokenFusion(num_classes=num_classes, img_size=img_size, head=head, **kwargs)


MODELS = {
    "token_fusion_late": token_fusion_late,
    "token_fusion_early": token_fusion_early,
    "token_fusion_layer": token_fusion_layer,
}

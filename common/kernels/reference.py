"""Pure-PyTorch reference ops for every kernel in `common.kernels`.

These are the definitions the Triton kernels are tested against, and the ops `accelerate` falls back to
when no Triton backend can run (no CUDA GPU and no `TRITON_INTERPRET=1`). Nothing here imports Triton.

Shapes: `B` batch, `C` channels, `H, W` spatial, `K` kernel size, `s` tokens per side, `N = s*s` tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Activations the depthwise kernel can fuse. The integer is the kernel's `ACT` constexpr.
# ---------------------------------------------------------------------------------------------------------
ACTS = {"none": 0, "relu": 1, "relu6": 2, "gelu": 3, "gelu_tanh": 4, "silu": 5, "hardswish": 6}


def act_fn(name: str):
    """The PyTorch function for an activation name in `ACTS`."""
    return {
        "none": lambda z: z,
        "relu": F.relu,
        "relu6": F.relu6,
        "gelu": F.gelu,
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
        "silu": F.silu,
        "hardswish": F.hardswish,
    }[name]


def act_name(module: nn.Module) -> str | None:
    """The `ACTS` name of an activation module, or None if the kernel cannot fuse it.

    Only the exact torch classes are recognised (a subclass may override `forward`)."""
    t = type(module)
    if t is nn.ReLU:
        return "relu"
    if t is nn.ReLU6:
        return "relu6"
    if t is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    if t is nn.SiLU:
        return "silu"
    if t is nn.Hardswish:
        return "hardswish"
    return None


# ---------------------------------------------------------------------------------------------------------
# 1. Depthwise k x k convolution, stride 1, 'same' padding, optional dilation, + bias + activation
# ---------------------------------------------------------------------------------------------------------
def dwconv2d_reference(x, weight, bias=None, dilation: int = 1, act: str = "none"):
    """act(conv2d(x, weight, bias, groups=C, padding=dilation*(K-1)//2, dilation)): the cuDNN baseline.

    x: (B, C, H, W) in any memory format; weight: (C, 1, K, K) with K odd; bias: (C,) or None."""
    k = weight.shape[-1]
    y = F.conv2d(x, weight, bias, stride=1, padding=dilation * (k - 1) // 2, dilation=dilation,
                 groups=x.shape[1])  # (B, C, H, W)
    return act_fn(act)(y)


def bn_foldable(bn: nn.BatchNorm2d) -> bool:
    """True when `bn` normalises with its running statistics (eval mode), so it is an affine map per channel
    that can be folded into the preceding convolution. In train mode BN uses batch statistics and cannot be
    folded (it must stay a separate module that also updates its running stats)."""
    return (not bn.training) and bn.track_running_stats and bn.running_mean is not None


def fold_bn(weight, bias, bn: nn.BatchNorm2d):
    """Fold an eval-mode BatchNorm2d into a depthwise conv: returns (weight', bias') with
    BN(conv(x, w, b)) == conv(x, w', b'). Differentiable in weight, bias, bn.weight, bn.bias (the running
    statistics are buffers), computed in float32 (float64 stays float64), returned in weight's dtype."""
    ct = torch.float64 if weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(bn.running_var.to(ct) + bn.eps)  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight.to(ct)
    b = bias.to(ct) if bias is not None else torch.zeros_like(scale)
    shift = (b - bn.running_mean.to(ct)) * scale  # (C,)
    if bn.bias is not None:
        shift = shift + bn.bias.to(ct)
    w = weight.to(ct) * scale.view(-1, 1, 1, 1)  # (C, 1, K, K)
    return w.to(weight.dtype), shift.to(weight.dtype)


# ---------------------------------------------------------------------------------------------------------
# 2. LKCA: one shared (2s-1) x (2s-1) kernel mixing the N = s*s tokens of V
# ---------------------------------------------------------------------------------------------------------
def lkca_index(s: int, device=None) -> torch.Tensor:
    """(N, N) long tensor: flat index into the (K*K) kernel table of T[(i,j),(p,q)] = kernel[p-i+s-1, q-j+s-1]."""
    r = torch.arange(s, device=device)
    d = r[None, :] - r[:, None] + s - 1  # (s, s): d[i, p] = p - i + s - 1
    k = 2 * s - 1
    idx = d[:, None, :, None] * k + d[None, :, None, :]  # (s_i, s_j, s_p, s_q)
    return idx.reshape(s * s, s * s)  # (N, N)


def lkca_toeplitz(kernel: torch.Tensor, s: int) -> torch.Tensor:
    """Gather the (N, N) block-Toeplitz matrix T from the (K, K) kernel, K = 2s-1."""
    return kernel.reshape(-1)[lkca_index(s, kernel.device)]  # (N, N)


def lkca_mix_gemm(kernel: torch.Tensor, v: torch.Tensor, s: int) -> torch.Tensor:
    """The Toeplitz-GEMM view: out[b] = T @ v[b]; v: (B, N, C) -> (B, N, C). T is cast to v's dtype."""
    return torch.matmul(lkca_toeplitz(kernel, s).to(v.dtype), v)  # (B, N, C)


def lkca_mix_conv(kernel: torch.Tensor, v: torch.Tensor, s: int) -> torch.Tensor:
    """The convolution view: every channel of the (s, s) token grid convolved ('same', zero padding s-1)
    with the one (2s-1) x (2s-1) kernel. ~4x the useful MACs (3/4 of the taps hit padding)."""
    bsz, n, c = v.shape
    x = v.transpose(1, 2).reshape(bsz * c, 1, s, s)  # (B*C, 1, s, s)
    y = F.conv2d(x, kernel.to(v.dtype)[None, None], padding=s - 1)  # (B*C, 1, s, s)
    return y.reshape(bsz, c, n).transpose(1, 2)  # (B, N, C)


# ---------------------------------------------------------------------------------------------------------
# 3. ECA: x * sigmoid(conv1d_k(mean_hw(x)) over channels)
# ---------------------------------------------------------------------------------------------------------
def eca_reference(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """The eager ECA: x (B, C, H, W), weight (1, 1, k) (an nn.Conv1d(1, 1, k, padding=(k-1)//2) weight)."""
    k = weight.shape[-1]
    p = x.mean((2, 3))  # (B, C)
    a = F.conv1d(p[:, None, :], weight, bias, padding=(k - 1) // 2)[:, 0]  # (B, C)
    return x * torch.sigmoid(a)[:, :, None, None]  # (B, C, H, W)

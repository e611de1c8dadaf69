"""Autograd functions and launchers for the Triton kernels, plus the backend decision.

Public ops (each differentiable; each runs the Triton kernels when `triton_usable(x)` and otherwise its
PyTorch reference from `common.kernels.reference`):

* `dwconv2d(x, weight, bias=None, dilation=1, act="none")`  -- depthwise k x k, stride 1, 'same' padding
* `lkca_mix(kernel, v, s)`                                   -- LKCA's shared (2s-1)^2 kernel on V (B, N, C)
* `eca(x, weight, bias=None)`                                -- ECA's pool + conv1d + sigmoid + rescale

Backend: Triton runs on CUDA tensors when Triton imports, and on CPU tensors only when `TRITON_INTERPRET=1`
was set before the kernels were first imported (Triton's CPU interpreter: slow, for tests). Otherwise the
reference op runs. `set_backend("reference")` forces the reference everywhere (for benchmarks/debugging).
"""
from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.nn.functional as F

from . import reference as ref

_FORCED: str | None = None  # None (auto) or "reference"
_TRITON_IMPORT_ERROR: str | None = None
_WARNED: set = set()
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def set_backend(name: str | None) -> None:
    """"auto"/None: Triton where it can run, else the reference; "reference": always the PyTorch reference."""
    global _FORCED
    if name not in (None, "auto", "reference"):
        raise ValueError(f"backend must be 'auto' or 'reference', got {name!r}")
    _FORCED = None if name in (None, "auto") else name


def interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _kernels():
    """Import (and cache) the Triton kernel module, or return None if Triton cannot be imported."""
    global _TRITON_IMPORT_ERROR
    mod = sys.modules.get(__package__ + ".triton_kernels")
    if mod is not None:
        return mod
    if _TRITON_IMPORT_ERROR is not None:
        return None
    try:
        from . import triton_kernels as mod
    except Exception as e:  # no triton wheel (macOS/Windows), or a broken install
        _TRITON_IMPORT_ERROR = f"{type(e).__name__}: {e}"
        return None
    return mod


def triton_usable(x: torch.Tensor) -> bool:
    """Whether the Triton path can run on a tensor like `x` (its device and dtype)."""
    if _FORCED == "reference" or x.dtype not in SUPPORTED_DTYPES:
        return False
    if x.device.type == "cuda":
        return _kernels() is not None
    if x.device.type == "cpu" and interpret_requested():
        mod = _kernels()
        if mod is None:
            return False
        if not mod.INTERPRETED:
            _warn_once("compiled", "common.kernels: TRITON_INTERPRET=1 is set now, but the kernels were imported "
                       "before it was set (compiled for a GPU), so CPU tensors use the reference ops. Set "
                       "TRITON_INTERPRET=1 before the first Triton op runs.")
            return False
        return True
    return False


def backend_summary() -> str:
    """One line saying which path CPU and CUDA tensors will take."""
    if _FORCED == "reference":
        return "reference (forced by set_backend)"
    cuda = torch.cuda.is_available()
    if cuda and _kernels() is not None:
        return "triton (CUDA)" + ("; CPU tensors: interpreter" if interpret_requested() else "")
    if interpret_requested():
        return "triton interpreter (CPU, TRITON_INTERPRET=1)" if _kernels() is not None else \
            f"reference (triton does not import: {_TRITON_IMPORT_ERROR})"
    return "reference (no CUDA GPU and TRITON_INTERPRET is not set)"


def _acc(dtype):
    tl = _kernels().tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_torch(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _p2(n: int, lo: int, hi: int) -> int:
    """Next power of two >= n, clamped to [lo, hi]."""
    v = lo
    while v < n and v < hi:
        v *= 2
    return v


def _s4(t):  # (b, c, h, w) strides of a 4-D tensor
    return tuple(t.stride())


# =========================================================================================================
# 1. depthwise conv
# =========================================================================================================
def _dw_blocks(H, W, C, interp, blocks):
    """(BLOCK_H, BLOCK_W, BLOCK_C, TILES). GPU: 8 x 8 pixels x 32 channels per program (channels contiguous in
    channels-last), 16 tiles per weight-gradient program. Interpreter: one tile per image (programs run one
    after another in Python, so fewer, bigger numpy tiles are much faster)."""
    if interp:  # whole image, up to 2^16 elements per tile: numpy ops cost about the same at any size here
        bh, bw = _p2(H, 1, 64), _p2(W, 1, 64)
        d = (bh, bw, _p2(C, 1, max(1, 65536 // (bh * bw))), 4)
    else:
        d = (8, 8, 32, 16)
    return tuple(blocks.get(k) or v for k, v in zip(("block_h", "block_w", "block_c", "tiles"), d))


def triton_cdiv(a, b):
    return (a + b - 1) // b


def _tap_range(k, dil, n):
    """[lo, hi): kernel rows (or columns) i whose shift i*dil - pad can reach an image of side n at all."""
    pad = dil * (k - 1) // 2
    return max(0, (pad - n) // dil + 1), min(k, (pad + n - 1) // dil + 1)


def _dw_launch(x, wk, bias, out, k, dil, act_id, blocks, grad=None):
    kt = _kernels()
    bsz, c, h, w = x.shape
    bh, bw, bc, _ = _dw_blocks(h, w, c, kt.INTERPRETED, blocks)
    th, tw = triton_cdiv(h, bh), triton_cdiv(w, bw)
    g = grad if grad is not None else x
    kt.dwconv_kernel[(th * tw, triton_cdiv(c, bc), bsz)](
        x, wk, bias if bias is not None else wk, g, out, h, w, c, tw, *_tap_range(k, dil, h), *_tap_range(k, dil, w),
        *_s4(x), *_s4(g), *_s4(out),
        K=k, DIL=dil, PAD=dil * (k - 1) // 2, ACT=act_id, HAS_BIAS=bias is not None, GRAD=grad is not None,
        ACC=_acc(x.dtype), BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc)
    return out


class _DWConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dilation, act, blocks):
        c, k = weight.shape[0], weight.shape[-1]
        wk = weight.reshape(c, k * k).t().contiguous()  # (K*K, C): a tap's channels are contiguous
        y = torch.empty_like(x)  # keeps x's memory format (channels-last stays channels-last)
        _dw_launch(x, wk, bias, y, k, dilation, ref.ACTS[act], blocks)
        ctx.save_for_backward(x, weight, bias)
        ctx.dilation, ctx.act, ctx.blocks = dilation, act, blocks
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        dil, act, blocks = ctx.dilation, ctx.act, ctx.blocks
        c, k = weight.shape[0], weight.shape[-1]
        bsz, _, h, w = x.shape
        wk = weight.reshape(c, k * k).t().contiguous()
        if act != "none":  # dZ = dY * act'(z), z recomputed (only x was saved)
            dz = _dw_launch(x, wk, bias, torch.empty_like(x), k, dil, ref.ACTS[act], blocks, grad=dy)
        else:
            dz = dy
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # dX = conv(dZ, flipped kernel): the transpose of a 'same' odd conv
            wf = weight.flip(-1, -2).reshape(c, k * k).t().contiguous()
            dx = _dw_launch(dz, wf, None, torch.empty_like(x), k, dil, 0, blocks)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            kt = _kernels()
            bh, bw, bc, tiles = _dw_blocks(h, w, c, kt.INTERPRETED, blocks)
            th, tw = triton_cdiv(h, bh), triton_cdiv(w, bw)
            nt = bsz * th * tw
            tiles = min(tiles, nt)
            nchunk = triton_cdiv(nt, tiles)
            acc = _acc_torch(x.dtype)
            (i0, i1), (j0, j1) = _tap_range(k, dil, h), _tap_range(k, dil, w)
            pw = (torch.zeros if (i1 - i0) * (j1 - j0) < k * k else torch.empty)(
                (nchunk, k * k, c), device=x.device, dtype=acc)
            pb = torch.empty((nchunk, c), device=x.device, dtype=acc) if bias is not None else pw
            kt.dwconv_wgrad_kernel[(triton_cdiv(c, bc), nchunk)](
                x, dz, pw, pb, h, w, c, th, tw, nt, tiles, i0, i1 - i0, j0, j1 - j0, *_s4(x), *_s4(dz),
                K=k, DIL=dil, PAD=dil * (k - 1) // 2, HAS_BIAS=bias is not None, ACC=_acc(x.dtype),
                BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc)
            dw = pw.sum(0).t().reshape(c, 1, k, k).to(weight.dtype)  # stage 2 of the reduction
            if bias is not None:
                db = pb.sum(0).to(bias.dtype)
        return dx, dw, db, None, None, None


def _check_dw(x, weight, bias, dilation, act):
    if x.dim() != 4:
        raise ValueError(f"dwconv2d expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    c = x.shape[1]
    if weight.shape[0] != c or weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"dwconv2d expects a depthwise weight (C={c}, 1, K, K), got {tuple(weight.shape)}")
    if weight.shape[-1] % 2 != 1:
        raise ValueError(f"dwconv2d supports odd K only ('same' padding), got K={weight.shape[-1]}")
    if act not in ref.ACTS:
        raise ValueError(f"act must be one of {sorted(ref.ACTS)}, got {act!r}")
    if bias is not None and bias.shape != (c,):
        raise ValueError(f"bias must have shape ({c},), got {tuple(bias.shape)}")
    if int(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")


def dwconv2d(x, weight, bias=None, dilation: int = 1, act: str = "none", *, block_h=None, block_w=None,
             block_c=None, tiles=None, force_triton: bool = False):
    """Fused depthwise conv: act(conv2d(x, weight, bias, groups=C, stride 1, padding dilation*(K-1)//2)).

    x: (B, C, H, W), any memory format (channels-last is the fast one), output in x's format.
    weight: (C, 1, K, K), K odd (1..31 tested); fold an eval-mode BN in first with `reference.fold_bn`."""
    _check_dw(x, weight, bias, dilation, act)
    if not (force_triton or triton_usable(x)):
        return ref.dwconv2d_reference(x, weight, bias, dilation, act)
    weight = weight.to(x.dtype)
    bias = bias.to(x.dtype) if bias is not None else None
    blocks = {k: v for k, v in (("block_h", block_h), ("block_w", block_w), ("block_c", block_c),
                                ("tiles", tiles)) if v}
    return _DWConvFn.apply(x, weight, bias, int(dilation), act, blocks)


# =========================================================================================================
# 2. LKCA mixing
# =========================================================================================================
def _lkca_launch_mix(kernel_flat, v, s, flip, block_c=None):
    kt = _kernels()
    bsz, n, c = v.shape
    out = torch.empty((bsz, n, c), device=v.device, dtype=v.dtype)
    if kt.INTERPRETED:  # few, big programs (all N tokens at once up to 256): the interpreter is per-op bound
        bm = bn = _p2(n, 16, 256)
        bc = block_c or _p2(c, 16, 256)
    else:
        bm, bn, bc = 64, 32, block_c or _p2(c, 16, 64)
    dot_f32 = kt.INTERPRETED or v.dtype in (torch.float32, torch.float64)
    grid = (triton_cdiv(n, bm), triton_cdiv(c, bc), bsz)
    kt.lkca_mix_kernel[grid](kernel_flat, v, out, n, c, s, *v.stride(), *out.stride(),
                             FLIP=flip, DOT_F32=dot_f32, IEEE=v.dtype == torch.float32 and not kt.INTERPRETED,
                             ACC=_acc(v.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_C=bc)
    return out


class _LKCAMixFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, v, s, block_c):
        kf = kernel.to(v.dtype).contiguous().reshape(-1)  # (K*K,)
        out = _lkca_launch_mix(kf, v, s, False, block_c)
        ctx.save_for_backward(kf, v)
        ctx.s, ctx.block_c, ctx.kdtype = s, block_c, kernel.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        kf, v = ctx.saved_tensors
        s = ctx.s
        dk = dv = None
        if ctx.needs_input_grad[1]:  # dV = T^T dOut: the same kernel with the transposed index
            dv = _lkca_launch_mix(kf, dout, s, True, ctx.block_c)
        if ctx.needs_input_grad[0]:
            kt = _kernels()
            bsz, n, c = v.shape
            acc = _acc_torch(v.dtype)
            bm = bn = _p2(n, 16, 256) if kt.INTERPRETED else 64
            bc = _p2(c, 16, 256) if kt.INTERPRETED else 32
            tiles = triton_cdiv(n, bm) * triton_cdiv(n, bn)
            splits = 1 if kt.INTERPRETED else max(1, min(bsz, 264 // max(tiles, 1)))  # ~2 waves on 132 SMs
            b_per = triton_cdiv(bsz, splits)
            splits = triton_cdiv(bsz, b_per)
            dt = torch.empty((splits, n, n), device=v.device, dtype=acc)
            dot_f32 = kt.INTERPRETED or v.dtype in (torch.float32, torch.float64)
            kt.lkca_dt_kernel[(triton_cdiv(n, bm), triton_cdiv(n, bn), splits)](
                dout, v, dt, n, c, bsz, b_per, *dout.stride(), *v.stride(),
                DOT_F32=dot_f32, IEEE=v.dtype == torch.float32 and not kt.INTERPRETED, ACC=_acc(v.dtype),
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_C=bc)
            dt = dt.sum(0) if splits > 1 else dt[0]  # (N, N) = sum_b dOut[b] v[b]^T
            ks = 2 * s - 1
            dkf = torch.empty((ks * ks,), device=v.device, dtype=acc)
            blk = _p2(ks * ks, 16, 256)
            kt.lkca_diag_kernel[(triton_cdiv(ks * ks, blk),)](dt, dkf, n, s, BLOCK=blk, ACC=_acc(v.dtype))
            dk = dkf.reshape(ks, ks).to(ctx.kdtype)
        return dk, dv, None, None


def lkca_mix(kernel, v, s: int, *, block_c=None, force_triton: bool = False):
    """out[b, n, c] = sum_m T[n, m] v[b, m, c], T[(i,j),(p,q)] = kernel[p-i+s-1, q-j+s-1].

    kernel: (2s-1, 2s-1); v: (B, N=s*s, C); output (B, N, C) in v's dtype (T is cast to it, as autocast
    would). The Triton path never builds the (N, N) matrix in the forward; its backward builds the (N, N)
    fp32 gradient of T once (N^2 floats, small next to B*N*C) and reduces it onto the table."""
    ks = 2 * s - 1
    if kernel.shape != (ks, ks):
        raise ValueError(f"lkca_mix expects a ({ks}, {ks}) kernel for s={s}, got {tuple(kernel.shape)}")
    if v.dim() != 3 or v.shape[1] != s * s:
        raise ValueError(f"lkca_mix expects v of shape (B, N={s * s}, C), got {tuple(v.shape)}")
    if not (force_triton or triton_usable(v)):
        return ref.lkca_mix_gemm(kernel, v, s)
    return _LKCAMixFn.apply(kernel, v, s, block_c)


# =========================================================================================================
# 3. ECA
# =========================================================================================================
def _eca_blocks(hw, c, interp, block_hw=None, block_c=None):
    if interp:
        bhw = block_hw or _p2(hw, 2, 1024)
        return bhw, block_c or _p2(c, 2, max(2, 65536 // bhw))
    return block_hw or 64, block_c or 64


class _ECAFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, blocks):
        kt = _kernels()
        bsz, c, h, w = x.shape
        hw = h * w
        bhw, bc = _eca_blocks(hw, c, kt.INTERPRETED, blocks.get("block_hw"), blocks.get("block_c"))
        acc = _acc_torch(x.dtype)
        wf = weight.reshape(-1).to(acc).contiguous()  # (k,)
        bf = bias.reshape(-1).to(acc).contiguous() if bias is not None else None
        p = torch.empty((bsz, c), device=x.device, dtype=acc)  # pass 1: read x
        kt.eca_reduce_kernel[(bsz, triton_cdiv(c, bc))](x, x, p, c, hw, w, 1.0 / hw, *_s4(x), *_s4(x),
                                                        PRODUCT=False, ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc)
        y = torch.empty_like(x)  # passes 2-3: read x, write y
        kt.eca_scale_kernel[(bsz, triton_cdiv(c, bc), triton_cdiv(hw, bhw))](
            x, p, wf, bf if bf is not None else wf, y, c, hw, w, *_s4(x), *_s4(y),
            KT=wf.numel(), HAS_BIAS=bf is not None, ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc)
        ctx.save_for_backward(x, p, weight, bias)
        ctx.blocks = blocks
        return y

    @staticmethod
    def backward(ctx, dy):
        x, p, weight, bias = ctx.saved_tensors
        kt = _kernels()
        bsz, c, h, w = x.shape
        hw = h * w
        bhw, bc = _eca_blocks(hw, c, kt.INTERPRETED, ctx.blocks.get("block_hw"), ctx.blocks.get("block_c"))
        acc = p.dtype
        dg = torch.empty((bsz, c), device=x.device, dtype=acc)  # dg[b,c] = sum_hw dy*x  (reads dy and x)
        kt.eca_reduce_kernel[(bsz, triton_cdiv(c, bc))](x, dy, dg, c, hw, w, 1.0, *_s4(x), *_s4(dy),
                                                        PRODUCT=True, ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc)
        # the (B, C)-sized middle (conv1d + sigmoid) is differentiated by autograd: O(B*C*k), negligible
        with torch.enable_grad():
            p_ = p.detach().requires_grad_(True)
            w_ = weight.detach().to(acc).requires_grad_(True)
            b_ = bias.detach().to(acc).requires_grad_(True) if bias is not None else None
            k = weight.shape[-1]
            g = torch.sigmoid(F.conv1d(p_[:, None, :], w_, b_, padding=(k - 1) // 2)[:, 0])  # (B, C)
            ins = [p_, w_] + ([b_] if b_ is not None else [])
            grads = torch.autograd.grad(g, ins, dg)
        dp, dw = grads[0], grads[1]
        db = grads[2].to(bias.dtype) if bias is not None else None
        dx = None
        if ctx.needs_input_grad[0]:  # dx = dy * g + dp / HW   (reads dy, writes dx)
            dx = torch.empty_like(x)
            kt.eca_dx_kernel[(bsz, triton_cdiv(c, bc), triton_cdiv(hw, bhw))](
                dy, g.detach().contiguous(), dp.contiguous(), dx, c, hw, w, 1.0 / hw, *_s4(dy), *_s4(dx),
                ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc)
        return dx, dw.to(weight.dtype), db, None


def eca(x, weight, bias=None, *, block_hw=None, block_c=None, force_triton: bool = False):
    """ECA: x * sigmoid(conv1d(mean_hw(x), weight, bias, padding=(k-1)//2) over channels)[:, :, None, None].

    x: (B, C, H, W) any memory format; weight: (1, 1, k) (nn.Conv1d(1, 1, k) weight), k odd; bias: (1,) or None."""
    if x.dim() != 4:
        raise ValueError(f"eca expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    if weight.dim() != 3 or weight.shape[:2] != (1, 1) or weight.shape[-1] % 2 != 1:
        raise ValueError(f"eca expects a (1, 1, k) Conv1d weight with odd k, got {tuple(weight.shape)}")
    if not (force_triton or triton_usable(x)):
        return ref.eca_reference(x, weight, bias)
    blocks = {k: v for k, v in (("block_hw", block_hw), ("block_c", block_c)) if v}
    return _ECAFn.apply(x, weight, bias, blocks)

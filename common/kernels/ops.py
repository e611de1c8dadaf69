"""Autograd functions and launchers for the Triton kernels, plus the backend decision and its safety nets.

Public ops (each differentiable; each runs the Triton kernels when `triton_usable(x, op)` and otherwise its
PyTorch reference from `common.kernels.reference`):

* `dwconv2d(x, weight, bias=None, dilation=1, act="none")`  -- depthwise k x k, stride 1, 'same' padding
* `lkca_mix(kernel, v, s)`                                   -- LKCA's shared (2s-1)^2 kernel on V (B, N, C)
* `eca(x, weight, bias=None)`                                -- ECA's pool + conv1d + sigmoid + rescale

Backend: Triton runs on CUDA tensors when Triton imports, and on CPU tensors only when `TRITON_INTERPRET=1`
was set before the kernels were first imported (Triton's CPU interpreter: slow, for tests). Otherwise the
reference op runs. `set_backend("reference")`, or the environment variable `HVP_KERNELS=reference` (read at
every call), forces the reference everywhere.

Safety nets (a reader's run must never crash or silently change numbers because of a kernel):

1. **Self-test.** The first time an op would run its Triton path for a (dtype, device), it runs forward and
   backward once on a small input against the reference (`selftest`). A compile error, a launch error or a
   mismatch gives a `RuntimeWarning` naming the op and the error, and that (op, dtype, device) uses the
   reference from then on.
2. **Run-time fallback.** A later Triton failure (e.g. a shape that compiles a new kernel variant, or a
   backward kernel that fails although the forward worked) is caught the same way: warning, the reference
   result for this call (forward: the reference op; backward: the reference op's gradients via autograd),
   and the reference for that (op, dtype, device) from then on. CUDA out-of-memory errors are re-raised.
3. **Limits.** Every launch goes through `_launch`, which checks the grid (axis 0 < 2^31, axes 1-2 <=
   65535) and that one image (one batch element) spans < 2^31 elements (the kernels use int32 offsets
   inside an image, int64 across images). A call beyond a limit warns and runs the reference.
4. **Device.** Every launch runs under `torch.cuda.device(tensor.device)`, so a tensor on `cuda:1` works
   without `torch.cuda.set_device`.
5. Empty inputs (B = 0, H*W = 0) take the reference op; block sizes that are not powers of two are rejected
   with a `ValueError` before anything runs.
6. The ops are opaque to `torch.compile` (`compile_opaque`, a lazy `torch.compiler.disable`): compiling an
   accelerated model works, with a graph break around each op (Dynamo cannot trace the interpreter's
   launches).
"""
from __future__ import annotations

import contextlib
import functools
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
ENV_BACKEND = "HVP_KERNELS"  # "reference" forces the PyTorch reference ops
GRID_AXIS0_MAX = 2 ** 31 - 1  # CUDA grid limits
GRID_AXIS12_MAX = 65535
INT32_SPAN_MAX = 2 ** 31 - 1  # elements one image may span (int32 offsets inside an image)
_SELFTEST: dict = {}  # (op, dtype, device string) -> True (Triton path verified) / False (use the reference)
OPS = ("dwconv2d", "lkca_mix", "eca")


def compile_opaque(fn):
    """`fn` made opaque to torch.compile (like `torch.compiler.disable`: a graph break around it, run eagerly),
    without importing torch._dynamo now (it imports Triton, and `common.kernels` must not: TRITON_INTERPRET
    has to be set before Triton's first import). Until torch._dynamo is imported nothing can be compiling,
    so the plain function runs."""
    state = {}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        d = state.get("disabled")
        if d is None:
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            d = state["disabled"] = torch.compiler.disable(fn)
        return d(*args, **kwargs)
    return wrapper


class KernelLimitError(RuntimeError):
    """A launch would exceed a grid or int32-offset limit (the op falls back to the reference)."""


def set_backend(name: str | None) -> None:
    """"auto"/None: Triton where it can run, else the reference; "reference": always the PyTorch reference."""
    global _FORCED
    if name not in (None, "auto", "reference"):
        raise ValueError(f"backend must be 'auto' or 'reference', got {name!r}")
    _FORCED = None if name in (None, "auto") else name


def _forced_reference() -> bool:
    env = os.environ.get(ENV_BACKEND, "").strip().lower()
    if env not in ("", "auto", "triton", "reference", "ref", "torch"):
        _warn_once(f"env:{env}", f"common.kernels: {ENV_BACKEND}={env!r} is not understood (expected 'reference' "
                   "or 'auto'); using 'auto'")
    return _FORCED == "reference" or env in ("reference", "ref", "torch")


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


def _platform_usable(x: torch.Tensor) -> bool:
    """Device, dtype and Triton import allow the Triton path (no self-test)."""
    if _forced_reference() or x.dtype not in SUPPORTED_DTYPES:
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


def triton_usable(x: torch.Tensor, op: str | None = None) -> bool:
    """Whether the Triton path runs for a tensor like `x` (its device and dtype). With `op` (one of `OPS`),
    also whether that op's one-time self-test for this (dtype, device) passed (it runs it the first time)."""
    if not _platform_usable(x):
        return False
    return op is None or _selftest_passed(op, x.dtype, x.device)


def backend_summary() -> str:
    """One line saying which path CPU and CUDA tensors will take."""
    if _forced_reference():
        return f"reference (forced by set_backend or {ENV_BACKEND}=reference)"
    cuda = torch.cuda.is_available()
    if cuda and _kernels() is not None:
        return "triton (CUDA)" + ("; CPU tensors: interpreter" if interpret_requested() else "")
    if interpret_requested():
        return "triton interpreter (CPU, TRITON_INTERPRET=1)" if _kernels() is not None else \
            f"reference (triton does not import: {_TRITON_IMPORT_ERROR})"
    return "reference (no CUDA GPU and TRITON_INTERPRET is not set)"


# ---------------------------------------------------------------------------------------------------------
# self-test and fallback
# ---------------------------------------------------------------------------------------------------------
_SELFTEST_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2, torch.float64: 1e-9}


def reset_selftest() -> None:
    """Forget every self-test result (the next call of each op re-runs its self-test)."""
    _SELFTEST.clear()


def selftest_status() -> dict:
    """{(op, dtype, device): passed} for every self-test run so far."""
    return dict(_SELFTEST)


def _selftest_inputs(op, dtype, device):
    g = torch.Generator().manual_seed(1234)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)
    if op == "dwconv2d":  # channels-last, bias, GELU, dilation 1: the common fused variant
        x = r(2, 16, 5, 6).contiguous(memory_format=torch.channels_last)
        return (x, r(16, 1, 3, 3, scale=1 / 3), r(16)), dict(dilation=1, act="gelu")
    if op == "lkca_mix":
        kern = r(5, 5) if dtype == torch.float64 else r(5, 5).float()  # fp32 table, as under autocast
        return (kern, r(2, 9, 16)), dict(s=3)
    return (r(2, 16, 3, 4), r(1, 1, 3), None), {}


def _call_reference(op, args, kw):
    if op == "dwconv2d":
        return ref.dwconv2d_reference(*args, kw["dilation"], kw["act"])
    if op == "lkca_mix":
        return ref.lkca_mix_gemm(args[0], args[1], kw["s"])
    return ref.eca_reference(*args)


def _call_triton(op, args, kw):
    if op == "dwconv2d":
        return _dwconv_triton(*args, kw["dilation"], kw["act"], {}, "convert", safe=False)
    if op == "lkca_mix":
        return _LKCAMixFn.apply(args[0], args[1], kw["s"], {}, False)
    return _ECAFn.apply(*args, {}, False)


def _run_selftest(op, dtype, device) -> tuple[bool, str]:
    """Forward + backward of the Triton path vs the reference (float64 on the same values)."""
    args, kw = _selftest_inputs(op, dtype, device)
    with torch.enable_grad(), torch.autocast(device.type, enabled=False):
        mine = [a.detach().requires_grad_(True) if a is not None else None for a in args]
        exact = [a.detach().double().requires_grad_(True) if a is not None else None for a in args]
        y = _call_triton(op, mine, kw)
        ye = _call_reference(op, exact, kw)
        dy = torch.randn(ye.shape, generator=torch.Generator().manual_seed(99)).to(device)
        y.backward(dy.to(y.dtype))
        ye.backward(dy.double())
    tol = _SELFTEST_TOL[dtype]
    pairs = [("output", y, ye)] + [(f"grad {i}", a.grad, e.grad) for i, (a, e) in enumerate(zip(mine, exact))
                                   if a is not None]
    for what, got, want in pairs:
        if got is None or got.shape != want.shape:
            return False, f"{what}: missing or wrong shape"
        err = ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
        if not err <= tol:  # also catches NaN
            return False, f"{what}: relative max error {err:.2e} > {tol:.0e}"
    return True, ""


def _selftest_passed(op: str, dtype, device) -> bool:
    key = (op, dtype, str(device))
    res = _SELFTEST.get(key)
    if res is None:
        try:
            res, why = _run_selftest(op, dtype, device)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - a compile or launch error means: do not use this kernel
            res, why = False, f"{type(e).__name__}: {str(e)[:400]}"
        _SELFTEST[key] = res
        if not res:
            warnings.warn(f"common.kernels: the Triton {op} self-test failed for {dtype} on {device} ({why}); "
                          f"{op} uses the PyTorch reference for {dtype} on {device} from now on (same numbers, "
                          f"no speed-up). Set {ENV_BACKEND}=reference to skip the Triton kernels altogether.",
                          RuntimeWarning, stacklevel=4)
    return res


def _disable(op: str, t: torch.Tensor, err: BaseException, where: str) -> None:
    """A Triton call failed after its self-test: warn once, use the reference for (op, dtype, device)."""
    limit = isinstance(err, KernelLimitError)
    if not limit:
        _SELFTEST[(op, t.dtype, str(t.device))] = False
    _warn_once(f"fail:{op}:{t.dtype}:{t.device}:{type(err).__name__}:{where}:{str(err)[:24]}",
               f"common.kernels: the Triton {op} {where} failed for {tuple(t.shape)} {t.dtype} on {t.device} "
               f"({type(err).__name__}: {str(err)[:400]}); using the PyTorch reference "
               + ("for this call." if limit else f"for {op} on {t.dtype}/{t.device} from now on."))


def _ref_grads(fn, inputs, needs, grad_out):
    """Gradients of the reference `fn(*inputs)` for the inputs whose `needs` flag is set (the backward
    fallback). Non-tensor inputs are passed through."""
    with torch.enable_grad():
        ins = [t.detach().requires_grad_(bool(n)) if isinstance(t, torch.Tensor) else t
               for t, n in zip(inputs, needs)]
        y = fn(*ins)
        wrt = [t for t, n in zip(ins, needs) if isinstance(t, torch.Tensor) and n]
        gs = iter(torch.autograd.grad(y, wrt, grad_out, allow_unused=True)) if wrt else iter(())
        return [next(gs) if isinstance(t, torch.Tensor) and n else None for t, n in zip(ins, needs)]


_LAUNCH_DEVICE = None  # the device the current launch is guarded for (read by tests)


@contextlib.contextmanager
def _device_ctx(device: torch.device):
    """Launch on `device`: torch.cuda.device(device) for CUDA tensors (Triton launches on the current
    device, not on the tensor's)."""
    global _LAUNCH_DEVICE
    prev = _LAUNCH_DEVICE
    _LAUNCH_DEVICE = device
    try:
        with (torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()):
            yield
    finally:
        _LAUNCH_DEVICE = prev


def _span(t: torch.Tensor) -> int:
    """Elements one batch element of `t` spans (max int32 offset + 1 inside an image)."""
    return 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape[1:], t.stride()[1:]) if n > 0)


def check_limits(name: str, grid, tensors) -> None:
    """Raise KernelLimitError if `grid` exceeds CUDA's grid limits or one image of a tensor spans >= 2^31
    elements (int32 offsets). Called before every launch."""
    g = tuple(grid) + (1,) * (3 - len(grid))
    if g[0] > GRID_AXIS0_MAX or g[1] > GRID_AXIS12_MAX or g[2] > GRID_AXIS12_MAX:
        raise KernelLimitError(f"{name}: grid {g} exceeds CUDA's limits (axis 0 < 2^31, axes 1-2 <= 65535)")
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dim() > 1 and _span(t) > INT32_SPAN_MAX:
            raise KernelLimitError(f"{name}: one batch element of a {tuple(t.shape)} tensor spans {_span(t)} "
                                   f"elements > 2^31-1 (the kernel's int32 offsets); split the batch element or "
                                   f"use the reference")


def _raw_launch(kernel, grid, device, args, kwargs):
    with _device_ctx(device):
        kernel[grid](*args, **kwargs)


def _launch(name, kernel, grid, device, args, kwargs, big=()):
    """Check the limits (grid; `big` = the tensors indexed with int32 offsets inside an image), then launch
    under the tensor's device."""
    grid = tuple(int(g) for g in grid)
    if min(grid) == 0:
        return
    check_limits(name, grid, big)
    _raw_launch(kernel, grid, device, args, kwargs)


def _check_blocks(blocks: dict) -> dict:
    """User block sizes must be positive powers of two (Triton's tl.arange needs them); `tiles`/`splits`
    are counts (any positive int)."""
    for k, v in blocks.items():
        if v is None:
            continue
        if not isinstance(v, int) or v < 1 or (k.startswith("block") and v & (v - 1)):
            raise ValueError(f"{k} must be a positive {'power of two' if k.startswith('block') else 'int'}, "
                             f"got {v!r}")
    return {k: v for k, v in blocks.items() if v}


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


def triton_cdiv(a, b):
    return (a + b - 1) // b


# =========================================================================================================
# 1. depthwise conv
# =========================================================================================================
NCHW_POLICY = "convert"  # NCHW inputs: "convert" to channels-last around the kernel, or run "direct"ly


def _dw_blocks(H, W, C, interp, blocks):
    """(BLOCK_H, BLOCK_W, BLOCK_C) of the forward / dX kernel. GPU: 8 x 8 pixels x 32 channels per program
    (channels contiguous in channels-last). Interpreter: one tile per image (programs run one after another
    in Python, so fewer, bigger numpy tiles are much faster)."""
    if interp:  # whole image, up to 2^16 elements per tile: numpy ops cost about the same at any size here
        bh, bw = _p2(H, 1, 64), _p2(W, 1, 64)
        d = (bh, bw, _p2(C, 1, max(1, 65536 // (bh * bw))))
    else:
        d = (8, 8, 32)
    return tuple(blocks.get(k) or v for k, v in zip(("block_h", "block_w", "block_c"), d))


def _dw_wgrad_plan(bsz, H, W, C, k, interp, blocks):
    """(small, KK_P2, BLOCK_H, BLOCK_W, BLOCK_C, TILES, NCHUNK) of the weight-gradient kernel.
    K <= 7: the tiles-outermost kernel with KK_P2 x P x BLOCK_C register accumulators (KK_P2 = K*K rounded
    up to a power of two), sized to ~8192 accumulators per program on a GPU. K > 7: the tap-outer kernel with
    8 x 8 x 32 tiles. The number of chunks (programs along axis 0) is capped so the fp32 partial buffer
    (NCHUNK, C, K*K) stays <= 2^24 elements (64 MiB) and <= 1024 chunks."""
    small = k <= 7
    kkp2 = _p2(k * k, 1, 64) if small else 1
    if interp:
        bh, bw = _p2(H, 1, 64), _p2(W, 1, 64)
        d = (bh, bw, _p2(C, 1, max(1, (2 ** 17 // kkp2) // (bh * bw))), 4)
    elif small:
        d = {1: (8, 8, 32), 2: (4, 8, 32), 4: (4, 8, 32), 16: (2, 8, 32), 32: (1, 8, 32), 64: (1, 8, 16)}[kkp2] + (32,)
    else:
        d = (8, 8, 32, 16)
    bh, bw, bc, tiles = (blocks.get(n) or v for n, v in zip(("block_h", "block_w", "block_c", "tiles"), d))
    nt = bsz * triton_cdiv(H, bh) * triton_cdiv(W, bw)
    if not interp and not blocks.get("tiles"):
        max_chunks = max(1, min(1024, 2 ** 24 // max(1, C * k * k)))
        tiles = max(tiles, triton_cdiv(nt, max_chunks))
    tiles = max(1, min(tiles, nt))
    return small, kkp2, bh, bw, bc, tiles, triton_cdiv(nt, tiles)


def _tap_range(k, dil, n):
    """[lo, hi): kernel rows (or columns) i whose shift i*dil - pad can reach an image of side n at all."""
    pad = dil * (k - 1) // 2
    return max(0, (pad - n) // dil + 1), min(k, (pad + n - 1) // dil + 1)


def _dw_launch(x, weight, bias, out, k, dil, act_id, blocks, grad=None, flip=False):
    """One pass of dwconv_kernel: forward (y = act(conv)), dZ (GRAD) or dX (FLIP). weight: (C, 1, K, K)
    contiguous, read in place."""
    kt = _kernels()
    bsz, c, h, w = x.shape
    bh, bw, bc = _dw_blocks(h, w, c, kt.INTERPRETED, blocks)
    th, tw = triton_cdiv(h, bh), triton_cdiv(w, bw)
    g = grad if grad is not None else x
    _launch("dwconv", kt.dwconv_kernel, (bsz * th * tw, triton_cdiv(c, bc)), x.device,
            (x, weight, bias if bias is not None else weight, g, out, h, w, c, th, tw, *_tap_range(k, dil, h),
             *_tap_range(k, dil, w), *_s4(x), *_s4(g), *_s4(out)),
            dict(K=k, DIL=dil, PAD=dil * (k - 1) // 2, ACT=act_id, HAS_BIAS=bias is not None,
                 GRAD=grad is not None, FLIP=flip, ACC=_acc(x.dtype), BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc),
            big=(x, g, out))
    return out


def _dw_wgrad(x, dz, k, dil, has_bias, blocks):
    """(dW (C, 1, K, K) in the accumulator dtype, dB (C,) or None): the two-stage reduction."""
    kt = _kernels()
    bsz, c, h, w = x.shape
    small, kkp2, bh, bw, bc, tiles, nchunk = _dw_wgrad_plan(bsz, h, w, c, k, kt.INTERPRETED, blocks)
    th, tw = triton_cdiv(h, bh), triton_cdiv(w, bw)
    nt = bsz * th * tw
    acc = _acc_torch(x.dtype)
    (i0, i1), (j0, j1) = _tap_range(k, dil, h), _tap_range(k, dil, w)
    partial_taps = not small and (i1 - i0) * (j1 - j0) < k * k
    pw = (torch.zeros if partial_taps else torch.empty)((nchunk, c, k * k), device=x.device, dtype=acc)
    pb = torch.empty((nchunk, c), device=x.device, dtype=acc) if has_bias else pw
    common = dict(K=k, DIL=dil, PAD=dil * (k - 1) // 2, HAS_BIAS=has_bias, ACC=_acc(x.dtype),
                  BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc)
    if small:
        _launch("dwconv_wgrad", kt.dwconv_wgrad_small_kernel, (nchunk, triton_cdiv(c, bc)), x.device,
                (x, dz, pw, pb, h, w, c, th, tw, nt, tiles, *_s4(x), *_s4(dz)), dict(common, KK_P2=kkp2),
                big=(x, dz))
    else:
        _launch("dwconv_wgrad", kt.dwconv_wgrad_kernel, (nchunk, triton_cdiv(c, bc)), x.device,
                (x, dz, pw, pb, h, w, c, th, tw, nt, tiles, i0, i1 - i0, j0, j1 - j0, *_s4(x), *_s4(dz)),
                common, big=(x, dz))
    dw = pw.sum(0).reshape(c, 1, k, k)  # stage 2 of the reduction: (C, K*K) -> (C, 1, K, K), no transpose
    return dw, (pb.sum(0) if has_bias else None)


class _DWConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dilation, act, blocks, safe):
        k = weight.shape[-1]
        y = torch.empty_like(x)  # keeps x's memory format (channels-last stays channels-last)
        _dw_launch(x, weight, bias, y, k, dilation, ref.ACTS[act], blocks)
        ctx.save_for_backward(x, weight, bias)
        ctx.dilation, ctx.act, ctx.blocks, ctx.safe = dilation, act, blocks, safe
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        try:
            dx, dw, db = _DWConvFn._triton_backward(ctx, x, weight, bias, dy)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a backward kernel that does not compile
            if not ctx.safe:
                raise
            _disable("dwconv2d", x, e, "backward")
            dil, act = ctx.dilation, ctx.act
            dx, dw, db = _ref_grads(lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, dil, act),
                                    [x, weight, bias], ctx.needs_input_grad[:3], dy)
        return dx, dw, db, None, None, None, None

    @staticmethod
    def _triton_backward(ctx, x, weight, bias, dy):
        dil, act, blocks = ctx.dilation, ctx.act, ctx.blocks
        k = weight.shape[-1]
        if act != "none":  # dZ = dY * act'(z), z recomputed (only x was saved)
            dz = _dw_launch(x, weight, bias, torch.empty_like(x), k, dil, ref.ACTS[act], blocks, grad=dy)
        else:
            dz = dy
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # dX = conv(dZ, flipped kernel): the transpose of a 'same' odd conv
            dx = _dw_launch(dz, weight, None, torch.empty_like(x), k, dil, 0, blocks, flip=True)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            dw, db = _dw_wgrad(x, dz, k, dil, bias is not None, blocks)
            dw = dw.to(weight.dtype)
            db = db.to(bias.dtype) if db is not None else None
        return dx, dw, db


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


def _dwconv_triton(x, weight, bias, dilation, act, blocks, nchw, safe=True):
    weight = weight.to(x.dtype).contiguous()  # no-ops in the usual case (same dtype, contiguous)
    bias = bias.to(x.dtype).contiguous() if bias is not None else None
    if nchw == "convert" and x.shape[1] > 1 and x.stride(1) != 1:
        # NCHW (or any layout whose channels are not innermost): the kernel's fast layout is channels-last
        # (aligned vector loads of a tap's shifted tile); convert around it, give the result back in NCHW
        y = _DWConvFn.apply(x.contiguous(memory_format=torch.channels_last), weight, bias, int(dilation), act,
                            blocks, safe)
        return y.contiguous()
    return _DWConvFn.apply(x, weight, bias, int(dilation), act, blocks, safe)


@compile_opaque
def dwconv2d(x, weight, bias=None, dilation: int = 1, act: str = "none", *, block_h=None, block_w=None,
             block_c=None, tiles=None, nchw: str | None = None, force_triton: bool = False):
    """Fused depthwise conv: act(conv2d(x, weight, bias, groups=C, stride 1, padding dilation*(K-1)//2)).

    x: (B, C, H, W), any memory format, output in the same format (NCHW in, NCHW out). weight: (C, 1, K, K),
    K odd (1..31 tested); fold an eval-mode BN in first with `reference.fold_bn`. `nchw`: how an input whose
    channels are not innermost is handled: "convert" (default, `NCHW_POLICY`) copies it to channels-last
    around the kernel, "direct" runs the kernel on its strides. `force_triton=True` runs the Triton path
    without the self-test and lets its errors raise (for tests)."""
    _check_dw(x, weight, bias, dilation, act)
    blocks = _check_blocks(dict(block_h=block_h, block_w=block_w, block_c=block_c, tiles=tiles))
    nchw = nchw or NCHW_POLICY
    if nchw not in ("convert", "direct"):
        raise ValueError(f"nchw must be 'convert' or 'direct', got {nchw!r}")
    if x.numel() == 0 or not (force_triton or triton_usable(x, "dwconv2d")):
        return ref.dwconv2d_reference(x, weight, bias, dilation, act)
    try:
        return _dwconv_triton(x, weight, bias, dilation, act, blocks, nchw, safe=not force_triton)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        if force_triton:
            raise
        _disable("dwconv2d", x, e, "forward")
        return ref.dwconv2d_reference(x, weight, bias, dilation, act)


# =========================================================================================================
# 2. LKCA mixing
# =========================================================================================================
def _lkca_launch_mix(kernel_flat, v, s, flip, blocks):
    kt = _kernels()
    bsz, n, c = v.shape
    out = torch.empty((bsz, n, c), device=v.device, dtype=v.dtype)
    if kt.INTERPRETED:  # few, big programs (all N tokens at once up to 256): the interpreter is per-op bound
        bm = bn = _p2(n, 16, 256)
        bc = _p2(c, 16, 256)
    else:
        bm, bn, bc = 64, 32, _p2(c, 16, 64)
    bm, bn, bc = blocks.get("block_m", bm), blocks.get("block_n", bn), blocks.get("block_c", bc)
    dot_f32 = kt.INTERPRETED or v.dtype in (torch.float32, torch.float64)
    mt = triton_cdiv(n, bm)
    _launch("lkca_mix", kt.lkca_mix_kernel, (mt * bsz, triton_cdiv(c, bc)), v.device,
            (kernel_flat, v, out, n, c, s, mt, *v.stride(), *out.stride()),
            dict(FLIP=flip, DOT_F32=dot_f32, IEEE=v.dtype == torch.float32 and not kt.INTERPRETED,
                 ACC=_acc(v.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_C=bc), big=(v, out))
    return out


class _LKCAMixFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, v, s, blocks, safe=True):
        kf = kernel.to(v.dtype).contiguous().reshape(-1)  # (K*K,)
        out = _lkca_launch_mix(kf, v, s, False, blocks)
        ctx.save_for_backward(kernel, kf, v)
        ctx.s, ctx.blocks, ctx.safe = s, blocks, safe
        return out

    @staticmethod
    def backward(ctx, dout):
        kernel, kf, v = ctx.saved_tensors
        try:
            dk, dv = _LKCAMixFn._triton_backward(ctx, kernel, kf, v, dout)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            if not ctx.safe:
                raise
            _disable("lkca_mix", v, e, "backward")
            s = ctx.s
            dk, dv = _ref_grads(lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s), [kernel, v],
                                ctx.needs_input_grad[:2], dout)
        return dk, dv, None, None, None

    @staticmethod
    def _triton_backward(ctx, kernel, kf, v, dout):
        s = ctx.s
        dk = dv = None
        if ctx.needs_input_grad[1]:  # dV = T^T dOut: the same kernel with the transposed index
            dv = _lkca_launch_mix(kf, dout, s, True, ctx.blocks)
        if ctx.needs_input_grad[0]:
            kt = _kernels()
            bsz, n, c = v.shape
            acc = _acc_torch(v.dtype)
            bm = bn = _p2(n, 16, 256) if kt.INTERPRETED else 64
            bc = _p2(c, 16, 256) if kt.INTERPRETED else 32
            bm, bn = ctx.blocks.get("block_m", bm), ctx.blocks.get("block_n", bn)
            tiles = triton_cdiv(n, bm) * triton_cdiv(n, bn)
            splits = 1 if kt.INTERPRETED else max(1, min(bsz, 264 // max(tiles, 1)))  # ~2 waves on 132 SMs
            b_per = triton_cdiv(bsz, splits)
            splits = triton_cdiv(bsz, b_per)
            dt = torch.empty((splits, n, n), device=v.device, dtype=acc)
            dot_f32 = kt.INTERPRETED or v.dtype in (torch.float32, torch.float64)
            _launch("lkca_dt", kt.lkca_dt_kernel, (triton_cdiv(n, bm), triton_cdiv(n, bn), splits), v.device,
                    (dout, v, dt, n, c, bsz, b_per, *dout.stride(), *v.stride()),
                    dict(DOT_F32=dot_f32, IEEE=v.dtype == torch.float32 and not kt.INTERPRETED,
                         ACC=_acc(v.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_C=bc), big=(dout, v))
            dt = dt.sum(0) if splits > 1 else dt[0]  # (N, N) = sum_b dOut[b] v[b]^T
            ks = 2 * s - 1
            dkf = torch.empty((ks * ks,), device=v.device, dtype=acc)
            blk = _p2(ks * ks, 16, 256)
            _launch("lkca_diag", kt.lkca_diag_kernel, (triton_cdiv(ks * ks, blk),), v.device,
                    (dt, dkf, n, s), dict(BLOCK=blk, ACC=_acc(v.dtype)))
            dk = dkf.reshape(ks, ks).to(kernel.dtype)
        return dk, dv


@compile_opaque
def lkca_mix(kernel, v, s: int, *, block_m=None, block_n=None, block_c=None, force_triton: bool = False):
    """out[b, n, c] = sum_m T[n, m] v[b, m, c], T[(i,j),(p,q)] = kernel[p-i+s-1, q-j+s-1].

    kernel: (2s-1, 2s-1); v: (B, N=s*s, C); output (B, N, C) in v's dtype (T is cast to it, as autocast
    would). The Triton path never builds the (N, N) matrix in the forward; its backward builds the (N, N)
    fp32 gradient of T once (N^2 floats, small next to B*N*C) and reduces it onto the table. Block sizes
    (powers of two, >= 16 for the tl.dot tiles) are for tests."""
    ks = 2 * s - 1
    if kernel.shape != (ks, ks):
        raise ValueError(f"lkca_mix expects a ({ks}, {ks}) kernel for s={s}, got {tuple(kernel.shape)}")
    if v.dim() != 3 or v.shape[1] != s * s:
        raise ValueError(f"lkca_mix expects v of shape (B, N={s * s}, C), got {tuple(v.shape)}")
    blocks = _check_blocks(dict(block_m=block_m, block_n=block_n, block_c=block_c))
    if any(b < 16 for b in blocks.values()):
        raise ValueError(f"lkca_mix block sizes must be >= 16 (tl.dot tiles on a GPU), got {blocks}")
    if v.numel() == 0 or not (force_triton or triton_usable(v, "lkca_mix")):
        return ref.lkca_mix_gemm(kernel, v, s)
    try:
        return _LKCAMixFn.apply(kernel, v, s, blocks, not force_triton)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        if force_triton:
            raise
        _disable("lkca_mix", v, e, "forward")
        return ref.lkca_mix_gemm(kernel, v, s)


# =========================================================================================================
# 3. ECA
# =========================================================================================================
def _eca_blocks(hw, c, interp, blocks):
    if interp:
        bhw = blocks.get("block_hw") or _p2(hw, 2, 1024)
        return bhw, blocks.get("block_c") or _p2(c, 2, max(2, 65536 // bhw))
    return blocks.get("block_hw") or 64, blocks.get("block_c") or 64


def _flat(w, *ts):
    """True when every tensor's H and W axes form one run of equal stride (sxh == W * sxw)."""
    return all(t.shape[2] == 1 or t.stride(2) == w * t.stride(3) for t in ts)


def _eca_reduce(x, y, bsz, c, hw, w, scale, product, blocks):
    """(B, C) fp32 sums over H*W of x (or x*y), times `scale`; split over H*W when the (B, C) grid is small
    (a batch of 1 would otherwise be ~C/64 programs looping over all pixels), summed in a second stage."""
    kt = _kernels()
    bhw, bc = _eca_blocks(hw, c, kt.INTERPRETED, blocks)
    nblk = triton_cdiv(hw, bhw)
    cblk = triton_cdiv(c, bc)
    splits = blocks.get("splits") or (1 if kt.INTERPRETED else max(1, min(nblk, 264 // max(1, bsz * cblk))))
    splits = min(splits, nblk)
    per = triton_cdiv(nblk, splits) * bhw  # pixels per split (a multiple of BLOCK_HW)
    splits = triton_cdiv(hw, per)
    part = torch.empty((splits, bsz, c), device=x.device, dtype=_acc_torch(x.dtype))
    _launch("eca_reduce", kt.eca_reduce_kernel, (bsz * splits, cblk), x.device,
            (x, y, part, bsz, c, hw, w, per, splits, scale, *_s4(x), *_s4(y)),
            dict(PRODUCT=product, FLAT=_flat(w, x, y), ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc), big=(x, y))
    return part[0] if splits == 1 else part.sum(0)


class _ECAFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, blocks, safe=True):
        kt = _kernels()
        bsz, c, h, w = x.shape
        hw = h * w
        bhw, bc = _eca_blocks(hw, c, kt.INTERPRETED, blocks)
        acc = _acc_torch(x.dtype)
        wf = weight.reshape(-1).to(acc).contiguous()  # (k,)
        bf = bias.reshape(-1).to(acc).contiguous() if bias is not None else None
        p = _eca_reduce(x, x, bsz, c, hw, w, 1.0 / hw, False, blocks)  # pass 1: read x -> (B, C) means
        y = torch.empty_like(x)  # passes 2-3: read x, write y
        ns = triton_cdiv(hw, bhw)
        _launch("eca_scale", kt.eca_scale_kernel, (bsz * ns, triton_cdiv(c, bc)), x.device,
                (x, p, wf, bf if bf is not None else wf, y, c, hw, w, ns, *_s4(x), *_s4(y)),
                dict(KT=wf.numel(), HAS_BIAS=bf is not None, FLAT=_flat(w, x, y), ACC=_acc(x.dtype),
                     BLOCK_HW=bhw, BLOCK_C=bc), big=(x, y))
        ctx.save_for_backward(x, p, weight, bias)
        ctx.blocks, ctx.safe = blocks, safe
        return y

    @staticmethod
    def backward(ctx, dy):
        x, p, weight, bias = ctx.saved_tensors
        try:
            dx, dw, db = _ECAFn._triton_backward(ctx, x, p, weight, bias, dy)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            if not ctx.safe:
                raise
            _disable("eca", x, e, "backward")
            dx, dw, db = _ref_grads(ref.eca_reference, [x, weight, bias], ctx.needs_input_grad[:3], dy)
        return dx, dw, db, None, None

    @staticmethod
    def _triton_backward(ctx, x, p, weight, bias, dy):
        kt = _kernels()
        bsz, c, h, w = x.shape
        hw = h * w
        bhw, bc = _eca_blocks(hw, c, kt.INTERPRETED, ctx.blocks)
        acc = p.dtype
        dg = _eca_reduce(x, dy, bsz, c, hw, w, 1.0, True, ctx.blocks)  # dg[b,c] = sum_hw dy*x
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
            ns = triton_cdiv(hw, bhw)
            _launch("eca_dx", kt.eca_dx_kernel, (bsz * ns, triton_cdiv(c, bc)), x.device,
                    (dy, g.detach().contiguous(), dp.contiguous(), dx, c, hw, w, ns, 1.0 / hw, *_s4(dy),
                     *_s4(dx)),
                    dict(FLAT=_flat(w, dy, dx), ACC=_acc(x.dtype), BLOCK_HW=bhw, BLOCK_C=bc), big=(dy, dx))
        return dx, dw.to(weight.dtype), db


@compile_opaque
def eca(x, weight, bias=None, *, block_hw=None, block_c=None, splits=None, force_triton: bool = False):
    """ECA: x * sigmoid(conv1d(mean_hw(x), weight, bias, padding=(k-1)//2) over channels)[:, :, None, None].

    x: (B, C, H, W) any memory format; weight: (1, 1, k) (nn.Conv1d(1, 1, k) weight), k odd; bias: (1,) or
    None. `block_hw`, `block_c` (powers of two) and `splits` (of the H*W reduction) are for tests."""
    if x.dim() != 4:
        raise ValueError(f"eca expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    if weight.dim() != 3 or weight.shape[:2] != (1, 1) or weight.shape[-1] % 2 != 1:
        raise ValueError(f"eca expects a (1, 1, k) Conv1d weight with odd k, got {tuple(weight.shape)}")
    blocks = _check_blocks(dict(block_hw=block_hw, block_c=block_c, splits=splits))
    if x.numel() == 0 or not (force_triton or triton_usable(x, "eca")):
        return ref.eca_reference(x, weight, bias)
    try:
        return _ECAFn.apply(x, weight, bias, blocks, not force_triton)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        if force_triton:
            raise
        _disable("eca", x, e, "forward")
        return ref.eca_reference(x, weight, bias)

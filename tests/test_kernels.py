"""Tests for common/kernels: every Triton kernel against its PyTorch reference, and `accelerate` on models.

Run on CPU under Triton's interpreter. TRITON_INTERPRET=1 has to be in the environment before Triton is
first imported (Triton's own `tl.zeros`, `tl.sum`, ... are `@triton.jit` functions, decorated at import),
and in a full `pytest` run something else has usually imported Triton already (`torch.utils.flop_counter`,
used by common/flops.py, does). So unless this process was started with TRITON_INTERPRET set, this file
re-runs itself in a fresh `python -m pytest tests/test_kernels.py` with TRITON_INTERPRET=1 (one test,
`test_kernels_under_interpreter_subprocess`, which shows the child's summary) and skips the in-process copies.
The parent's environment is not changed, so notebooks run by the same pytest never see the variable.

    pytest tests/test_kernels.py                          # CPU: interpreter, via the subprocess
    TRITON_INTERPRET=1 pytest tests/test_kernels.py       # CPU: interpreter, in this process
    TRITON_INTERPRET=0 pytest tests/test_kernels.py       # GPU: the compiled kernels on CUDA tensors

Interpreter limits (docs/kernels.md): it checks indexing, masking, tiling and the forward/backward math
(fp32, fp16, bf16 values cast to fp32 after loading, fp64 for gradcheck); it cannot check speed, races,
bf16/fp16 tensor-core `tl.dot` (the kernels upcast tiles to fp32 before `tl.dot` under the interpreter),
TF32 precision, or out-of-bounds addresses. Those need a GPU run of this file and of `common.kernels.bench`.
"""
import glob
import importlib
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common import kernels as K
from common.kernels import ops
from common.kernels import reference as ref

pytestmark = pytest.mark.kernels
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = os.environ.get("TRITON_INTERPRET")
GPU_MODE = _ENV is not None and _ENV.strip().lower() in ("0", "false", "off", "no")
_triton = sys.modules.get("triton")
IN_PROCESS = GPU_MODE or (ops.interpret_requested() and (_triton is None or bool(_triton.knobs.runtime.interpret)))
DEV = "cuda" if GPU_MODE else "cpu"
RUNNER = "test_kernels_under_interpreter_subprocess"
if GPU_MODE and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 but no CUDA GPU: the compiled kernels cannot run", allow_module_level=True)


@pytest.fixture(autouse=True)
def _in_process_only(request):
    if not IN_PROCESS and request.node.name != RUNNER:
        pytest.skip(f"runs under the interpreter in a subprocess ({RUNNER})")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """torch on one thread while these tests run (see the runner's comment); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_kernels_under_interpreter_subprocess():
    if IN_PROCESS:
        pytest.skip("this process already runs the kernels (interpreter or GPU)")
    # one thread: the interpreter is single-threaded numpy, and the float64 references of the paper models
    # run ~30k tiny per-group convs per forward, where OpenMP barriers on a busy 2-core machine cost 10x
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "pytest", os.path.join("tests", "test_kernels.py"), "-q",
                          "-rfE"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    tail = "\n".join(out.stdout.strip().splitlines()[-40:])
    print(tail)
    assert out.returncode == 0, f"kernel tests failed under the interpreter:\n{tail}\n{out.stderr[-2000:]}"


F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
# max |triton - exact| / max |exact|, exact = the reference in float64 on the same (rounded) inputs.
# fp16/bf16: the kernels accumulate in fp32; the error is the output/gradient storage rounding (+ the
# dZ = dY*act'(z) intermediate stored in the input dtype, as eager PyTorch does).
TOL = {F32: 2e-5, F16: 4e-3, BF16: 3e-2, F64: 1e-12}


def assert_close(got, exact, dtype, what):
    got, exact = got.double(), exact.double()
    err = ((got - exact).abs().max() / exact.abs().max().clamp_min(1e-6)).item()
    assert err <= TOL[dtype], f"{what}: relative max error {err:.2e} > {TOL[dtype]:.0e} ({dtype})"


def run_both(fn_triton, fn_ref, inputs, dtype, names):
    """Forward + backward of the Triton op (inputs in `dtype`) and of the reference (same values, float64)."""
    a = [t.to(DEV, dtype).requires_grad_(True) if t is not None else None for t in inputs]
    r = [t.detach().to(DEV, F64).requires_grad_(True) if t is not None else None for t in a]
    ya, yr = fn_triton(*a), fn_ref(*r)
    assert ya.dtype == dtype and ya.shape == yr.shape
    g = torch.randn(yr.shape, generator=torch.Generator().manual_seed(1)).to(DEV)
    ya.backward(g.to(dtype))
    yr.backward(g.to(F64))
    assert_close(ya, yr, dtype, "output")
    for n, ta, tr in zip(names, a, r):
        if ta is not None:
            assert ta.grad is not None, f"no gradient for {n}"
            assert_close(ta.grad, tr.grad, dtype, f"grad {n}")
    return ya


# ---------------------------------------------------------------------------------------------------------
# 1. depthwise conv
# ---------------------------------------------------------------------------------------------------------
# (B, C, H, W, k, dilation, act, dtype, channels_last, blocks): k = 1, 3, 7, 31; odd dims; batch 1; tiles
# smaller than the image (masking across tile edges); an image smaller than the kernel (k = 31 on 4x5).
DW_CASES = [
    (1, 3, 5, 6, 1, 1, "none", F32, False, {}),
    (1, 5, 5, 7, 3, 1, "relu", F32, True, dict(block_h=2, block_w=4, block_c=4, tiles=3)),
    (2, 3, 6, 5, 3, 2, "gelu", F32, False, {}),
    (1, 4, 6, 7, 3, 1, "relu6", F32, True, {}),
    (1, 6, 7, 6, 7, 1, "gelu_tanh", F16, True, {}),
    (1, 4, 6, 7, 5, 1, "silu", BF16, True, {}),
    (1, 4, 5, 5, 3, 1, "hardswish", F16, False, {}),
    (1, 2, 4, 5, 31, 1, "none", F32, False, {}),
    # production channel counts (C % 16 == 0), tiles smaller than the image (several weight-grad chunks)
    (2, 32, 5, 6, 3, 1, "gelu", BF16, True, dict(block_h=2, block_w=4, tiles=3)),
    (1, 64, 4, 5, 7, 1, "none", F32, True, dict(block_h=2, block_w=2, block_c=16, tiles=2)),
    (1, 16, 6, 5, 5, 2, "silu", F16, False, {}),  # NCHW, converted to channels-last around the kernel
    (1, 3, 6, 7, 9, 1, "none", F32, True, dict(block_h=4, block_w=4, tiles=2)),  # large-k weight grad, chunks
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"k{c[4]}d{c[5]}-{c[6]}-{str(c[7])[6:]}"
                         f"{'-cl' if c[8] else ''}{'-tiles' if c[9] else ''}")
def test_dwconv_matches_reference(case):
    b, c, h, w, k, d, act, dtype, cl, blocks = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen)
    if cl:
        x = x.to(memory_format=torch.channels_last)
    wt = torch.randn(c, 1, k, k, generator=gen) * (1.0 / k)
    bias = torch.randn(c, generator=gen) if k != 31 else None
    y = run_both(lambda x_, w_, b_: K.dwconv2d(x_, w_, b_, d, act, force_triton=True, **blocks),
                 lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, d, act), [x, wt, bias], dtype,
                 ["x", "weight", "bias"])
    if cl:
        assert y.is_contiguous(memory_format=torch.channels_last), "output must keep the channels-last layout"


@pytest.mark.parametrize("layout", ["nchw-direct", "nchw-convert", "channel-slice", "w-slice"])
def test_dwconv_layouts_and_noncontiguous(layout):
    """NCHW run directly and converted, a misaligned channel slice of a channels-last tensor and a W-slice of
    an NCHW one (non-dense strides), with a stride-0 (expanded) upstream gradient; the output keeps the
    input's layout class (NCHW in, NCHW out)."""
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(2, 40, 5, 9, generator=gen, dtype=F64).to(DEV)
    nchw = "direct" if layout == "nchw-direct" else "convert"
    if layout == "channel-slice":
        x = big.contiguous(memory_format=torch.channels_last)[:, 3:35]
    elif layout == "w-slice":
        x = big[:, :32, :, 1:8]
    else:
        x = big[:, :32].contiguous()
    x = x.requires_grad_(True)
    w = torch.randn(32, 1, 3, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    y = K.dwconv2d(x, w, None, 1, "gelu", nchw=nchw, force_triton=True)
    xr, wr = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    yr = ref.dwconv2d_reference(xr, wr, None, 1, "gelu")
    torch.testing.assert_close(y, yr)
    y.sum().backward()  # dY = ones expanded: stride 0 everywhere
    yr.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad)
    if layout.startswith("nchw"):
        assert y.is_contiguous(), "NCHW in, NCHW out"


def test_determinism():
    """Two runs give bitwise equal outputs and gradients (two-stage reductions, no atomics): a depthwise
    conv with several weight-gradient chunks (small and large k), LKCA over several tiles, ECA with a split
    pool."""
    gen = torch.Generator().manual_seed(0)

    def run(fn, ins):
        ins = [t.detach().to(DEV).requires_grad_(True) for t in ins]
        y = fn(*ins)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(DEV))
        return [y.detach()] + [t.grad for t in ins]
    x = torch.randn(2, 16, 5, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    cases = [
        (lambda x_, w_: K.dwconv2d(x_, w_, None, 1, "relu", block_h=2, block_w=2, tiles=3, force_triton=True),
         [x, torch.randn(16, 1, 3, 3, generator=gen)]),
        (lambda x_, w_: K.dwconv2d(x_, w_, None, 1, "none", block_h=4, block_w=4, tiles=2, force_triton=True),
         [x[:1, :4], torch.randn(4, 1, 9, 9, generator=gen)]),
        (lambda k_, v_: K.lkca_mix(k_, v_, 6, block_m=16, block_n=16, block_c=16, force_triton=True),
         [torch.randn(11, 11, generator=gen), torch.randn(2, 36, 32, generator=gen)]),
        (lambda x_, w_: K.eca(x_, w_, block_hw=8, block_c=8, splits=3, force_triton=True),
         [x, torch.randn(1, 1, 3, generator=gen)]),
    ]
    for i, (fn, ins) in enumerate(cases):
        a, b = run(fn, ins), run(fn, ins)
        assert all(torch.equal(u, v) for u, v in zip(a, b)), f"case {i} is not deterministic"


def test_dwconv_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    wt = torch.randn(2, 1, 3, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    bias = torch.randn(2, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *t: K.dwconv2d(*t, 2, "gelu", force_triton=True), (x, wt, bias),
                                    fast_mode=True)


def test_fold_bn_matches_eval_batchnorm():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=True).double()
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    bn.eval()
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    w, b = ref.fold_bn(conv.weight, conv.bias, bn)
    torch.testing.assert_close(ref.dwconv2d_reference(x, w, b), bn(conv(x)))


def test_dwconv_bad_input():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="odd K"):
        K.dwconv2d(x, torch.randn(4, 1, 2, 2))
    with pytest.raises(ValueError, match="depthwise weight"):
        K.dwconv2d(x, torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match="act must be"):
        K.dwconv2d(x, torch.randn(4, 1, 3, 3), act="tanh")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        K.dwconv2d(x[0], torch.randn(4, 1, 3, 3))


# ---------------------------------------------------------------------------------------------------------
# 2. LKCA
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s,b,c,dtype,blocks", [
    (1, 1, 5, F32, {}), (3, 2, 5, F32, {}), (5, 2, 17, F32, {}), (5, 1, 17, F16, {}), (4, 2, 3, BF16, {}),
    # N = 36 / 64 tokens over several 16-token tiles (rows and columns), C = 32 over two 16-channel tiles
    (6, 2, 32, F32, dict(block_m=16, block_n=16, block_c=16)), (8, 1, 32, BF16, dict(block_m=16, block_n=32)),
])
def test_lkca_matches_reference(s, b, c, dtype, blocks):
    gen = torch.Generator().manual_seed(0)
    kern = torch.randn(2 * s - 1, 2 * s - 1, generator=gen)
    v = torch.randn(b, s * s, c, generator=gen)
    # N = s*s is not a multiple of the 16-wide tiles (1, 9, 25, 16 tokens), C not a multiple of 16
    run_both(lambda k_, v_: K.lkca_mix(k_.float() if dtype != F64 else k_, v_, s, force_triton=True, **blocks),
             lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s), [kern, v], dtype, ["kernel", "v"])


def test_lkca_reference_views_agree():
    """The conv view, the GEMM view and (if present) papers/lkca.py's three views compute one operator."""
    s = 4
    kern, v = torch.randn(7, 7, dtype=F64), torch.randn(2, 16, 6, dtype=F64)
    torch.testing.assert_close(ref.lkca_mix_conv(kern, v, s), ref.lkca_mix_gemm(kern, v, s))
    try:
        lk = importlib.import_module("papers.lkca")
    except ImportError:
        return
    m = lk.LKCA(6, s).double()
    with torch.no_grad():
        m.kernel.copy_(kern)
    torch.testing.assert_close(m.toeplitz(), ref.lkca_toeplitz(kern, s))
    for view in ("gemm", "attention", "conv"):
        m.view = view
        torch.testing.assert_close(m.mix(v), ref.lkca_mix_gemm(kern, v, s))


def test_lkca_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    kern = torch.randn(3, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    v = torch.randn(1, 4, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k_, v_: K.lkca_mix(k_, v_, 2, force_triton=True), (kern, v),
                                    fast_mode=True)


# ---------------------------------------------------------------------------------------------------------
# 3. ECA
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b,c,h,w,k,dtype,cl,bias,blocks", [
    (1, 5, 3, 4, 1, F32, False, False, {}),
    (2, 17, 5, 5, 3, F32, True, True, dict(block_hw=8, block_c=4)),  # tiles smaller than HW and C
    (2, 9, 4, 3, 5, F16, True, False, {}),
    (1, 8, 3, 3, 3, BF16, False, False, {}),
    (1, 32, 6, 7, 5, F32, False, True, dict(block_hw=8, splits=3)),  # NCHW (flat H*W) + split pool
    (2, 16, 5, 6, 3, F16, True, False, dict(block_hw=4, block_c=8, splits=4)),  # channels-last + split pool
])
def test_eca_matches_reference(b, c, h, w, k, dtype, cl, bias, blocks):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen)
    if cl:
        x = x.to(memory_format=torch.channels_last)
    wt = torch.randn(1, 1, k, generator=gen)
    bb = torch.randn(1, generator=gen) if bias else None
    run_both(lambda x_, w_, b_: K.eca(x_, w_, b_, force_triton=True, **blocks),
             lambda x_, w_, b_: ref.eca_reference(x_, w_, b_), [x, wt, bb], dtype, ["x", "weight", "bias"])


def test_eca_non_flat_strides():
    """A W-slice of an NCHW tensor: H and W are not one run of equal stride (the kernel's FLAT=False path)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 4, 7, generator=gen, dtype=F64).to(DEV)[..., 1:6].requires_grad_(True)
    wt = torch.randn(1, 1, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    assert x.stride(2) != x.shape[3] * x.stride(3)
    assert torch.autograd.gradcheck(lambda *t: K.eca(*t, splits=2, block_hw=4, force_triton=True), (x, wt),
                                    fast_mode=True)


def test_eca_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 2, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    wt = torch.randn(1, 1, 3, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    bb = torch.randn(1, generator=gen, dtype=F64).to(DEV).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *t: K.eca(*t, force_triton=True), (x, wt, bb), fast_mode=True)


# ---------------------------------------------------------------------------------------------------------
# 4. accelerate: a toy model with every contract, then the paper models
# ---------------------------------------------------------------------------------------------------------
class ECA(nn.Module):  # the contract of papers/iianet.py's ECA
    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = torch.sigmoid(self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1))
        return x * y[:, :, None, None]


class Toy(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                               nn.BatchNorm2d(c), nn.GELU())                           # conv+BN+act
        self.b = nn.Sequential(nn.Conv2d(c, c, 5, padding=4, dilation=2, groups=c), nn.ReLU())  # conv+act
        self.c = nn.Conv2d(c, c, 3, padding=1, groups=c)                                 # standalone
        self.strided = nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c)                 # not matched
        self.valid = nn.Conv2d(c, c, 3, padding=0, groups=c)                             # not 'same'
        self.eca = ECA(3)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = self.eca(self.c(self.b(self.a(x))))
        return self.head(self.valid(self.strided(x)).mean((2, 3)))


def _perturb(model):
    """Non-trivial weights and BN statistics (fresh ones make BN an identity and LKCA zero)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("kernel"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _check_accelerated(model, x, train_too=True, tol=1e-4):
    """accelerate(model) keeps state_dict keys/values, eval outputs and train outputs/gradients/BN stats."""
    import copy
    model, x = model.to(DEV), x.to(DEV)
    base = copy.deepcopy(model)
    keys = list(model.state_dict().keys())
    report = K.accelerate(model)
    assert list(model.state_dict().keys()) == keys, "state_dict keys changed"
    for (n, a), b in zip(model.state_dict().items(), base.state_dict().values()):
        assert torch.equal(a, b), f"{n} changed"
    model.eval()
    base.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=tol, atol=tol)
    if train_too:
        model.train()
        base.train()
        torch.manual_seed(0)  # dropout / drop-path draw the same masks in both
        ya = model(x)
        torch.manual_seed(0)
        yb = base(x)
        torch.testing.assert_close(ya, yb, rtol=tol, atol=tol)
        ya.square().sum().backward()
        yb.square().sum().backward()
        # relative to each tensor's largest gradient (floored at 1e-9 x the model's largest, for tensors
        # whose exact gradient is zero and which get ~1e-18 of rounding on both sides)
        gmax = max(p.grad.abs().max().item() for p in base.parameters() if p.grad is not None)
        for (n, pa), pb in zip(model.named_parameters(), base.parameters()):
            if pb.grad is None:
                assert pa.grad is None, n
                continue
            err = (pa.grad - pb.grad).abs().max().item() / max(pb.grad.abs().max().item(), 1e-9 * gmax)
            assert err <= 10 * tol, f"grad {n}: relative error {err:.1e}"
        for (n, ba), bb in zip(model.named_buffers(), base.buffers()):
            torch.testing.assert_close(ba, bb, rtol=tol, atol=tol, msg=f"buffer {n} (BN must still update)")
    return report


def test_accelerate_toy_model():
    torch.manual_seed(0)
    model = Toy().double()
    _perturb(model)
    x = torch.randn(2, 3, 7, 6, dtype=F64)
    report = _check_accelerated(model, x, tol=1e-9)
    assert (report["dwconv"], report["dwconv+bn"], report["dwconv+act"], report["eca"]) == (3, 1, 2, 1)
    assert type(model.strided) is nn.Conv2d and type(model.valid) is nn.Conv2d
    assert isinstance(model.a[1], K.TritonDWConv2d)
    again = K.accelerate(model)  # idempotent
    assert again["dwconv"] == 3 and again["eca"] == 1
    K.restore(model)
    assert type(model.a[1]) is nn.Conv2d and type(model.a[2]) is nn.BatchNorm2d and type(model.eca) is ECA


def test_accelerate_lkca_module():
    lk = pytest.importorskip("papers.lkca")
    torch.manual_seed(0)
    model = lk.LKCA(8, 3).double()
    _perturb(model)
    report = _check_accelerated(model, torch.randn(2, 9, 8, dtype=F64), tol=1e-9)
    assert report["lkca"] == 1 and type(model).__name__ == "TritonLKCA"


def _paper_modules():
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "papers", "*.py"))
                   if not os.path.basename(p).startswith("_"))
    return names or ["<none>"]


SIZES = (32, 64, 96, 128, 160, 192, 224, 256, 299)


def _meta_build(factory, sizes=SIZES):
    """Build a factory on the meta device (no memory, no init: fast) at the first size it accepts."""
    for size in sizes:
        try:
            with torch.device("meta"):
                return factory(num_classes=3, img_size=size), size
        except (ValueError, RuntimeError, NotImplementedError):
            continue
    raise AssertionError(f"{factory.__name__}: no img_size in {sizes} builds")


def _tiny(factory, first):
    """Build for real at the smallest size (from `first` on) at which an eval forward runs."""
    for size in SIZES[SIZES.index(first):]:
        try:
            model = factory(num_classes=3, img_size=size)
            with torch.no_grad():
                model.eval()(torch.randn(1, 3, size, size))
            return model, size
        except (ValueError, RuntimeError):
            continue
    raise AssertionError(f"{factory.__name__}: no img_size in {SIZES} builds and runs")


@pytest.mark.parametrize("paper", _paper_modules())
def test_accelerate_paper_models(paper):
    """Every factory in MODELS (built on the meta device): accelerate keeps the state_dict keys, restore
    undoes it. The first factory with something to swap, built for real at a tiny size: eval outputs and
    train-mode outputs, gradients and BN statistics unchanged with the Triton kernels (interpreter on CPU).
    A paper with nothing to swap (token_fusion): accelerate warns "nothing to accelerate", a no-op."""
    if paper == "<none>":
        pytest.skip("no paper module in papers/ yet")
    mod = importlib.import_module(f"papers.{paper}")
    chosen = None
    for name, factory in mod.MODELS.items():
        model, size = _meta_build(factory)
        keys = list(model.state_dict().keys())
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            report = K.accelerate(model)
        assert list(model.state_dict().keys()) == keys, f"{name}: state_dict keys changed"
        found = report["dwconv"] + report["lkca"] + report["eca"]
        print(f"{paper}.{name}: {report['dwconv']} dwconv ({report['dwconv+bn']} +BN, {report['dwconv+act']} "
              f"+act), {report['lkca']} LKCA, {report['eca']} ECA")
        if found == 0:
            assert any("nothing to accelerate" in str(x.message) for x in w), name
        elif chosen is None:
            chosen = (name, factory, size)
        K.restore(model)
        assert list(model.state_dict().keys()) == keys and not any(
            "_hvp_orig_class" in m.__dict__ for m in model.modules()), f"{name}: restore incomplete"
    if chosen is None:
        return  # nothing to accelerate in this paper; nothing numeric to check
    name, factory, size = chosen
    torch.manual_seed(0)
    model, size = _tiny(factory, size)
    _perturb(model)
    # float64: train-mode BN on the tiny late-stage maps (2 images x 1x1 or 2x2 pixels) divides by a tiny
    # batch std, so this tiny config is badly conditioned (iiANET's stem gradients reach ~5e6): fp32
    # rounding differences grow to ~1e-2, float64 ones to ~1e-7 of each tensor's scale.
    _check_accelerated(model.double(), torch.randn(2, 3, size, size, dtype=F64), tol=1e-6)


def test_fallback_without_gpu_or_interpreter():
    """No CUDA and no TRITON_INTERPRET: importing never imports Triton, accelerate warns clearly and the
    model computes exactly what it computed before (the reference ops)."""
    code = (
        "import sys, warnings, torch\n"
        "from torch import nn\n"
        "import common.kernels as K\n"
        "m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU()).eval()\n"
        "x = torch.randn(2, 4, 5, 5); y0 = m(x)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); r = K.accelerate(m)\n"
        "assert r['dwconv'] == 1 and 'reference' in r['backend'], r\n"
        "assert any('TRITON_INTERPRET is not set' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "assert torch.equal(m(x), y0)\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------
# 5. safety: self-test, run-time fallback, HVP_KERNELS, device guard, limits, empty inputs, block sizes
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh():
    """Self-test results and warn-once keys forgotten before and after the test."""
    ops.reset_selftest()
    ops._WARNED.clear()
    yield
    ops.reset_selftest()
    ops._WARNED.clear()


def _inputs(op, dtype=F32, grad=False):
    gen = torch.Generator().manual_seed(5)
    if op == "dwconv2d":
        t = [torch.randn(2, 4, 5, 6, generator=gen), torch.randn(4, 1, 3, 3, generator=gen),
             torch.randn(4, generator=gen)]
        fn = lambda x, w, b: K.dwconv2d(x, w, b, 1, "relu")  # noqa: E731
        rf = lambda x, w, b: ref.dwconv2d_reference(x, w, b, 1, "relu")  # noqa: E731
    elif op == "lkca_mix":
        t = [torch.randn(5, 5, generator=gen), torch.randn(2, 9, 6, generator=gen)]
        fn, rf = (lambda k, v: K.lkca_mix(k, v, 3)), (lambda k, v: ref.lkca_mix_gemm(k, v, 3))
    else:
        t = [torch.randn(2, 6, 3, 4, generator=gen), torch.randn(1, 1, 3, generator=gen)]
        fn, rf = K.eca, ref.eca_reference
    t = [a.to(DEV, dtype).requires_grad_(grad) for a in t]
    return fn, rf, t


@pytest.mark.parametrize("op", ops.OPS)
def test_selftest_mismatch_falls_back(op, fresh, monkeypatch):
    """A kernel that computes wrong numbers fails its one-time self-test: a warning naming the op, and the
    exact reference result from then on (no second warning)."""
    launcher = {"dwconv2d": "_dw_launch", "lkca_mix": "_lkca_launch_mix", "eca": "_eca_reduce"}[op]
    orig = getattr(ops, launcher)

    def wrong(*a, **kw):
        return orig(*a, **kw) + 0.5  # off by 0.5 everywhere
    monkeypatch.setattr(ops, launcher, wrong)
    fn, rf, t = _inputs(op)
    with pytest.warns(RuntimeWarning, match=f"Triton {op} self-test failed.*relative max error"):
        y = fn(*t)
    assert torch.equal(y, rf(*t))
    assert ops.selftest_status()[(op, F32, str(torch.device(DEV)))] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(fn(*t), rf(*t))


class SimulatedCompileError(RuntimeError):
    pass


def test_selftest_compile_error_falls_back_everywhere(fresh, monkeypatch):
    """Every launch raises (as a Triton compile error would): each op warns once and returns the reference;
    an accelerated model computes exactly what it computed before (BN/activation not skipped)."""
    def boom(kernel, grid, device, args, kwargs):
        raise SimulatedCompileError("simulated: the kernel does not compile")
    monkeypatch.setattr(ops, "_raw_launch", boom)
    for op in ops.OPS:
        fn, rf, t = _inputs(op)
        with pytest.warns(RuntimeWarning, match=f"{op} self-test failed.*SimulatedCompileError"):
            y = fn(*t)
        assert torch.equal(y, rf(*t)), op
    torch.manual_seed(0)
    model = Toy().to(DEV)
    _perturb(model)
    import copy
    base = copy.deepcopy(model).eval()
    K.accelerate(model)
    x = torch.randn(2, 3, 7, 6).to(DEV)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), base(x))


@pytest.mark.parametrize("op", ops.OPS)
def test_backward_failure_after_working_forward(op, fresh, monkeypatch):
    """The self-test passed and the forward ran the kernels; then a backward kernel fails (it compiles only at
    the first backward): a warning, the reference gradients for this call, the reference from then on."""
    fn, rf, t = _inputs(op, grad=True)
    assert ops.triton_usable(t[0], op)  # the real self-test passes
    kt = ops._kernels()
    backward_only = {kt.dwconv_wgrad_small_kernel, kt.lkca_dt_kernel, kt.eca_dx_kernel}
    orig = ops._raw_launch

    def fail_backward(kernel, grid, device, args, kwargs):
        if kernel in backward_only:
            raise SimulatedCompileError("simulated: the backward kernel does not compile")
        return orig(kernel, grid, device, args, kwargs)
    monkeypatch.setattr(ops, "_raw_launch", fail_backward)
    y = fn(*t)
    tr = [a.detach().clone().requires_grad_(True) for a in t]
    yr = rf(*tr)
    torch.testing.assert_close(y, yr, rtol=1e-5, atol=1e-5)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(DEV)
    with pytest.warns(RuntimeWarning, match=f"Triton {op} backward failed"):
        y.backward(g)
    yr.backward(g)
    for a, b in zip(t, tr):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)
    assert ops.selftest_status()[(op, F32, str(torch.device(DEV)))] is False


def test_env_var_forces_reference(fresh, monkeypatch):
    """HVP_KERNELS=reference (read at every call): nothing is launched, the reference runs; a value that is
    not understood warns."""
    monkeypatch.setenv("HVP_KERNELS", "reference")

    def no_launch(*a, **kw):
        raise AssertionError("a kernel was launched although HVP_KERNELS=reference")
    monkeypatch.setattr(ops, "_raw_launch", no_launch)
    for op in ops.OPS:
        fn, rf, t = _inputs(op)
        assert not ops.triton_usable(t[0], op)
        assert torch.equal(fn(*t), rf(*t))
    assert "HVP_KERNELS=reference" in ops.backend_summary()
    monkeypatch.setenv("HVP_KERNELS", "refrence")
    with pytest.warns(RuntimeWarning, match="not understood"):
        ops.triton_usable(torch.zeros(1))


def test_every_launch_is_device_guarded(fresh, monkeypatch):
    """Every kernel launch (forward and backward of the three ops, small- and large-k weight gradients) runs
    inside `_device_ctx(tensor.device)`; and `_device_ctx` enters torch.cuda.device for a CUDA device (Triton
    launches on the current device, not the tensor's)."""
    kt = ops._kernels()
    seen = {}

    class Probe:
        def __init__(self, name, k):
            self.name, self.k = name, k

        def __getitem__(self, grid):
            def call(*args, **kw):
                devs = {a.device for a in args if isinstance(a, torch.Tensor)}
                assert devs and ops._LAUNCH_DEVICE in devs, f"{self.name} launched outside the device guard"
                seen[self.name] = seen.get(self.name, 0) + 1
                return self.k[grid](*args, **kw)
            return call
    names = [n for n in dir(kt) if n.endswith("_kernel")]
    for n in names:
        monkeypatch.setattr(kt, n, Probe(n, getattr(kt, n)))
    for op in ops.OPS:
        fn, rf, t = _inputs(op, grad=True)
        fn(*t).sum().backward()
    x = torch.randn(1, 2, 4, 4).to(DEV).requires_grad_(True)
    K.dwconv2d(x, torch.randn(2, 1, 9, 9).to(DEV).requires_grad_(True), force_triton=True).sum().backward()
    assert set(seen) == set(names), f"not launched: {set(names) - set(seen)}"
    entered = []

    class FakeDevice:
        def __init__(self, d):
            entered.append(d)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    with ops._device_ctx(torch.device("cuda", 1)):
        assert ops._LAUNCH_DEVICE == torch.device("cuda", 1)
    assert entered == [torch.device("cuda", 1)]


def test_limits_fall_back_with_a_clear_message(fresh, monkeypatch):
    """A launch beyond the grid limit or the int32 span of one image: the op warns and runs the reference for
    that call only (the next call within limits uses the kernels again); force_triton raises the error."""
    for op in ops.OPS:
        fn, rf, t = _inputs(op)
        assert ops.triton_usable(t[0], op)  # self-test passed before the limits shrink
        for attr, val, msg in (("GRID_AXIS12_MAX", 0, "exceeds CUDA's limits"), ("INT32_SPAN_MAX", 10, "int32")):
            monkeypatch.setattr(ops, attr, val)
            with pytest.warns(RuntimeWarning, match=f"{op} forward failed.*{msg}.*for this call"):
                y = fn(*t)
            assert torch.equal(y, rf(*t))
            monkeypatch.undo()
        assert ops.selftest_status()[(op, F32, str(torch.device(DEV)))] is True
    monkeypatch.setattr(ops, "INT32_SPAN_MAX", 10)
    with pytest.raises(ops.KernelLimitError, match="int32"):
        K.dwconv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 1, 3, 3), force_triton=True)


def _plan(fn, monkeypatch):
    """The grids `fn` would launch on a GPU (kernels not run: meta tensors), and its warnings."""
    grids = []
    monkeypatch.setattr(ops, "_raw_launch", lambda kernel, grid, device, args, kwargs: grids.append(grid))
    monkeypatch.setattr(ops._kernels(), "INTERPRETED", False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return grids, [str(m.message) for m in w]


def test_issue_shapes_plan_within_grid_limits(monkeypatch):
    """The shapes that broke CUDA's grid limits (weight-gradient grid y = 65536 at 67M pixels; ECA grid
    z = 68907 at H*W = 4.41M) now launch with the big count on axis 0; one image of 2.26e9 elements is
    refused before any launch; the weight-gradient partial buffer stays <= 2^24 elements."""
    x = torch.empty(1, 16, 8192, 8192, device="meta", dtype=BF16).contiguous(memory_format=torch.channels_last)
    w = torch.empty(16, 1, 3, 3, device="meta", dtype=BF16, requires_grad=True)
    grids, msgs = _plan(lambda: K.dwconv2d(x, w, force_triton=True).float().sum().backward(), monkeypatch)
    assert len(grids) == 2 and not msgs and all(g[1] <= 65535 for g in grids), grids
    xe = torch.empty(1, 16, 2100, 2100, device="meta", dtype=BF16)
    grids, msgs = _plan(lambda: K.eca(xe, torch.empty(1, 1, 3, device="meta", dtype=BF16), force_triton=True),
                        monkeypatch)
    assert len(grids) == 2 and not msgs and all(g[1] <= 65535 for g in grids), grids
    xo = torch.empty(1, 512, 2100, 2100, device="meta", dtype=BF16)
    with pytest.raises(ops.KernelLimitError, match="2257920000 elements"):
        _plan(lambda: K.dwconv2d(xo, torch.empty(512, 1, 3, 3, device="meta", dtype=BF16), nchw="direct",
                                 force_triton=True), monkeypatch)
    for shape, k in (((64, 128, 56, 56), 31), ((64, 128, 56, 56), 3), ((256, 1024, 7, 7), 7), ((1, 16, 8192, 8192), 3)):
        small, kkp2, bh, bw, bc, tiles, nchunk = ops._dw_wgrad_plan(shape[0], shape[2], shape[3], shape[1], k,
                                                                   False, {})
        assert nchunk * shape[1] * k * k <= 2 ** 24 and small == (k <= 7) and kkp2 * bh * bw * bc <= 8192


def test_empty_inputs_and_bad_block_sizes():
    """B = 0 (and H*W = 0) give empty outputs and gradients, no division by zero; block sizes that are not
    powers of two are rejected before anything runs."""
    for fn, t in ((lambda x, w: K.dwconv2d(x, w, force_triton=True),
                   [torch.randn(0, 4, 5, 5), torch.randn(4, 1, 3, 3)]),
                  (lambda x, w: K.eca(x, w, force_triton=True), [torch.randn(0, 4, 5, 5), torch.randn(1, 1, 3)]),
                  (lambda x, w: K.eca(x, w, force_triton=True), [torch.randn(2, 4, 0, 5), torch.randn(1, 1, 3)]),
                  (lambda k, v: K.lkca_mix(k, v, 2, force_triton=True), [torch.randn(3, 3), torch.randn(0, 4, 5)])):
        t = [a.requires_grad_(True) for a in t]
        y = fn(*t)
        assert y.shape == t[-2 if y.dim() == 4 else 1].shape or y.numel() == 0
        y.sum().backward()
        assert t[0].grad is not None and t[0].grad.shape == t[0].shape
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="block_h must be a positive power of two"):
        K.dwconv2d(x, torch.randn(4, 1, 3, 3), block_h=3)
    with pytest.raises(ValueError, match="tiles must be a positive int"):
        K.dwconv2d(x, torch.randn(4, 1, 3, 3), tiles=-1)
    with pytest.raises(ValueError, match="block_hw must be a positive power of two"):
        K.eca(x, torch.randn(1, 1, 3), block_hw=12)
    with pytest.raises(ValueError, match=">= 16"):
        K.lkca_mix(torch.randn(3, 3), torch.randn(1, 4, 5), 2, block_m=8)
    with pytest.raises(ValueError, match="nchw must be"):
        K.dwconv2d(x, torch.randn(4, 1, 3, 3), nchw="nhwc")


# ---------------------------------------------------------------------------------------------------------
# 6. accelerate: replaced BN (DDP's convert_sync_batchnorm), deepcopy, autocast
# ---------------------------------------------------------------------------------------------------------
def test_accelerate_then_convert_sync_batchnorm(fresh):
    """accelerate -> convert_sync_batchnorm (what DDP scripts do) -> the same outputs: the conv sees that its
    fused BN was replaced and stops folding it (once it applied BN twice: outputs off by 1.35); a deepcopy of
    an accelerated model fuses the copy's own BN."""
    import copy
    torch.manual_seed(0)
    base = Toy().double().to(DEV)
    _perturb(base)
    x = torch.randn(2, 3, 7, 6, dtype=F64).to(DEV)
    base.eval()  # eval before the conversion: the old BN is foldable, so a stale fusion would apply BN twice
    fast = copy.deepcopy(base)
    K.accelerate(fast)
    twin = copy.deepcopy(fast)  # its conv's link must point at the copy's container and BN
    assert twin.a[1].__dict__["_hvp_bn"] is twin.a[2] and twin.a[1].__dict__["_hvp_link"][0] is twin.a
    fast = nn.SyncBatchNorm.convert_sync_batchnorm(fast)
    assert type(fast.a[2]) is nn.SyncBatchNorm and isinstance(fast.a[1], K.TritonDWConv2d)
    base.eval(), fast.eval(), twin.eval()
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="replaced or moved since accelerate"):
        torch.testing.assert_close(fast(x), base(x), rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), base(x), rtol=1e-9, atol=1e-9)
    y = twin.a[1](torch.randn(2, 6, 5, 5, dtype=F64).to(DEV))
    assert getattr(y, "_hvp_fused", ()) == (twin.a[2], twin.a[3])
    base.train(), fast.train()
    torch.testing.assert_close(fast(x), base(x), rtol=1e-9, atol=1e-9)


def test_accelerated_model_under_autocast_bf16():
    """An accelerated model under bf16 autocast (CPU here, CUDA in gpu_smoke) is as close to the fp32 model
    as the plain model under autocast is: eval (BN folded in fp32, then cast) and train (outputs, gradients)."""
    import copy
    torch.manual_seed(0)
    plain = Toy().to(DEV)
    _perturb(plain)
    fast = copy.deepcopy(plain)
    K.accelerate(fast)
    x = torch.randn(2, 3, 9, 8).to(DEV)
    for mode in ("eval", "train"):
        outs, grads = [], []
        for m, amp in ((copy.deepcopy(plain), False), (plain, True), (fast, True)):
            m.train(mode == "train")
            m.zero_grad(set_to_none=True)
            with torch.autocast(DEV, dtype=BF16, enabled=amp):
                y = m(x)
            assert y.dtype == (BF16 if amp else F32)
            y.float().square().sum().backward()
            outs.append(y.float())
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))

        def err(a, b):
            return ((a - b).abs().max() / b.abs().max()).item()
        e_plain, e_fast = err(outs[1], outs[0]), err(outs[2], outs[0])
        assert e_fast <= max(2 * e_plain, 1e-2), (mode, e_plain, e_fast)
        g_plain, g_fast = err(grads[1], grads[0]), err(grads[2], grads[0])
        assert g_fast <= max(2 * g_plain, 2e-2), (mode, g_plain, g_fast)


# ---------------------------------------------------------------------------------------------------------
# 7. stand-ins for ConvNeXt's block and UniRepLKNet's Dilated Reparam Block (papers being written elsewhere)
# ---------------------------------------------------------------------------------------------------------
class ConvNeXtBlockStandIn(nn.Module):
    """ConvNeXt's block structure (Liu et al. 2022, official code): depthwise 7x7 with bias, padding 3 ->
    channels-last LayerNorm -> Linear 4x -> GELU -> Linear -> layer scale -> residual."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.5 * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)  # (B, C, H, W)


class DilatedReparamStandIn(nn.Module):
    """UniRepLKNet's Dilated Reparam Block structure (Ding et al. 2024, official code): a large depthwise conv
    without bias + its BN, plus parallel dilated small depthwise convs, each with a BN (for K = 13: kernel
    sizes 5, 7, 3, 3, 3 with dilations 1, 2, 3, 4, 5). `merge()` gives the inference form: one depthwise
    K x K conv with bias. `seq=True` builds the large conv + BN as an nn.Sequential (as the authors'
    conv_bn helper does)."""

    def __init__(self, c, k=13, seq=False):
        super().__init__()
        self.k = k
        lk = nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False)
        if seq:
            self.lk = nn.Sequential()
            self.lk.add_module("conv", lk)
            self.lk.add_module("bn", nn.BatchNorm2d(c))
        else:
            self.lk_origin, self.origin_bn = lk, nn.BatchNorm2d(c)
        self.branches = [(5, 1), (7, 2), (3, 3), (3, 4), (3, 5)] if k == 13 else [(3, 2)]
        for ks, r in self.branches:
            setattr(self, f"dil_conv_k{ks}_{r}", nn.Conv2d(c, c, ks, 1, (r * (ks - 1) + 1) // 2, dilation=r,
                                                           groups=c, bias=False))
            setattr(self, f"dil_bn_k{ks}_{r}", nn.BatchNorm2d(c))

    def forward(self, x):
        out = self.lk(x) if hasattr(self, "lk") else self.origin_bn(self.lk_origin(x))
        for ks, r in self.branches:
            out = out + getattr(self, f"dil_bn_k{ks}_{r}")(getattr(self, f"dil_conv_k{ks}_{r}")(x))
        return out

    @torch.no_grad()
    def merge(self) -> nn.Conv2d:
        conv, bn = (self.lk.conv, self.lk.bn) if hasattr(self, "lk") else (self.lk_origin, self.origin_bn)
        w, b = ref.fold_bn(conv.weight, None, bn)
        for ks, r in self.branches:
            wd, bd = ref.fold_bn(getattr(self, f"dil_conv_k{ks}_{r}").weight, None, getattr(self, f"dil_bn_k{ks}_{r}"))
            eq = torch.zeros(wd.shape[0], 1, r * (ks - 1) + 1, r * (ks - 1) + 1, dtype=wd.dtype, device=wd.device)
            eq[:, :, ::r, ::r] = wd  # the dilated kernel as a dense one with zeros in between
            p = (self.k - eq.shape[-1]) // 2
            w, b = w + F.pad(eq, (p, p, p, p)), b + bd
        merged = nn.Conv2d(w.shape[0], w.shape[0], self.k, 1, self.k // 2, groups=w.shape[0], bias=True).to(w)
        merged.weight.copy_(w)
        merged.bias.copy_(b)
        return merged


def test_accelerate_convnext_block_standin():
    torch.manual_seed(0)
    model = ConvNeXtBlockStandIn(8).double()
    report = _check_accelerated(model, torch.randn(2, 8, 6, 7, dtype=F64), tol=1e-9)
    assert (report["dwconv"], report["dwconv+bn"], report["dwconv+act"]) == (1, 0, 0)
    assert isinstance(model.dwconv, K.TritonDWConv2d) and model.dwconv.bias is not None


@pytest.mark.parametrize("seq", [False, True], ids=["attrs", "conv_bn-sequential"])
def test_accelerate_unireplknet_block_standin(seq):
    """Train-time form: the 13x13 conv and all five dilated branches are swapped (BNs folded only where the
    conv and BN sit in one nn.Sequential); inference form: the merged 13x13 conv with bias is swapped. The
    merged conv equals the block in eval mode (checks the stand-in itself)."""
    torch.manual_seed(0)
    block = DilatedReparamStandIn(4, 13, seq=seq).double()
    _perturb(block)
    x = torch.randn(2, 4, 9, 8, dtype=F64).to(DEV)
    report = _check_accelerated(block, x, tol=1e-9)
    assert (report["dwconv"], report["dwconv+bn"]) == (6, 1 if seq else 0), report
    merged = block.eval().merge()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), block(x), rtol=1e-9, atol=1e-9)
    K.restore(block)
    report = _check_accelerated(merged, x, tol=1e-9, train_too=False)
    assert report["dwconv"] == 1 and isinstance(merged, K.TritonDWConv2d)


# ---------------------------------------------------------------------------------------------------------
# 8. the GPU smoke-and-benchmark command, --tiny on CPU
# ---------------------------------------------------------------------------------------------------------
def test_gpu_smoke_tiny(tmp_path):
    """`python -m common.kernels.gpu_smoke --tiny` (run in-process here): every check passes, the limit
    probes and torch.compile over an accelerated model included. On a GPU, run it without --tiny."""
    if GPU_MODE:
        pytest.skip("on a GPU run `python -m common.kernels.gpu_smoke` itself (< 5 min)")
    from common.kernels import gpu_smoke
    import json
    rc = gpu_smoke.main(["--tiny", "--papers", "lkca", "--out", str(tmp_path)])
    res = json.load(open(tmp_path / "gpu_smoke.json"))["results"]
    fails = [r for r in res if r["status"] == "FAIL"]
    assert rc == 0 and not fails, fails
    checks = " | ".join(r["check"] for r in res if r["status"] == "PASS")
    for want in ("selftest: eca bf16", "67M pixels", "2.26e9", "torch.compile", "nchw/direct", "lkca s6"):
        assert want.split(": ")[-1] in checks, want

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
@pytest.mark.parametrize("s,b,c,dtype", [(1, 1, 5, F32), (3, 2, 5, F32), (5, 2, 17, F32), (5, 1, 17, F16),
                                         (4, 2, 3, BF16)])
def test_lkca_matches_reference(s, b, c, dtype):
    gen = torch.Generator().manual_seed(0)
    kern = torch.randn(2 * s - 1, 2 * s - 1, generator=gen)
    v = torch.randn(b, s * s, c, generator=gen)
    # N = s*s is not a multiple of the 16-wide tiles (1, 9, 25, 16 tokens), C not a multiple of 16
    run_both(lambda k_, v_: K.lkca_mix(k_.float() if dtype != F64 else k_, v_, s, force_triton=True),
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

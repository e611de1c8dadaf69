"""GPU smoke test and mini-benchmark for common/kernels: one command, meant to finish in < 5 min on one H200.

    python -m common.kernels.gpu_smoke --out runs/gpu_smoke          # a CUDA GPU, TRITON_INTERPRET unset
    python -m common.kernels.gpu_smoke --only correct,accel          # some sections
    TRITON_INTERPRET=1 python -m common.kernels.gpu_smoke --tiny     # CPU interpreter: this script's plumbing

Sections (every check prints one PASS/FAIL/SKIP line; all of them go to <out>/gpu_smoke.json; the exit status
is 1 if any check failed):

* selftest: the one-time self-test of every op in bf16, fp16 and fp32 passes (no fallback).
* correct: forward and every gradient against a float64 reference on production shapes (C % 16 == 0 and
  not, k = 3/5/7/13/31, dilation, LKCA with N > one tile), in every dtype and layout (channels-last, NCHW
  converted to channels-last, NCHW run directly), a non-contiguous channel slice with an expanded upstream
  gradient, and determinism (a second run is bitwise equal).
* limits: the grid-limit probes of issue 15 (weight-gradient grid at ~67M pixels in one batch, ECA at
  H*W = 4.4M) run and are correct; one image of 2.26e9 elements (int32 offsets) falls back to the
  reference with a warning instead of overflowing (in a subprocess, so a crash cannot poison this one); a
  tensor on a second GPU without `set_device` (skipped with one GPU). --tiny: the launch plans of the same
  shapes on the meta device (grids within limits, the overflow refused).
* accel: `accelerate` on every paper model (the first factory with something to swap) under bf16
  autocast, train and eval, NCHW and channels-last, against the same model without it; torch.compile over
  an accelerated model (graph breaks around the swapped modules) against eager.
* perf: Triton vs cuDNN/eager (and torch.compile of the eager baseline, --compile) on production shapes,
  forward and forward+backward, channels-last and NCHW. Every timed Triton result is first checked against
  the reference; a wrong result is a FAIL however fast it is. Times are `triton.testing.do_bench` medians.
  Skipped on CPU (the interpreter says nothing about speed).

--max-seconds (default 280): a section's checks that would start after its share of it (correct 45%,
limits 55%, accel 80%, perf 100%) are skipped with a SKIP line, so the command ends near that time even
when compiling every kernel variant on a fresh machine takes longer than expected (not measured yet).
"""
from __future__ import annotations

import argparse
import copy
import glob
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from . import reference as ref
from .accelerate import accelerate

BF16, F16, F32, F64 = torch.bfloat16, torch.float16, torch.float32, torch.float64
TOL = {BF16: 2e-2, F16: 5e-3, F32: 2e-5, F64: 1e-10}  # max |got - exact| / max |exact|
NAMES = {BF16: "bf16", F16: "fp16", F32: "fp32", F64: "fp64"}


class Smoke:
    def __init__(self, args):
        self.args = args
        self.dev = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
        self.res = []
        self.t0 = time.time()

    # ------------------------------------------------------------------------------------------ helpers
    def log(self, sec, name, ok, **kw):
        status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.res.append(dict(section=sec, check=name, status=status, t=round(time.time() - self.t0, 1), **kw))
        print(f"[{time.time() - self.t0:6.1f}s] {status} {sec}: {name} {kw if kw else ''}", flush=True)

    # fraction of --max-seconds after which a section's remaining checks are skipped (SKIP lines): the first
    # run on a fresh machine compiles every kernel variant, and that time has not been measured yet
    DEADLINE = {"selftest": 0.15, "correct": 0.45, "limits": 0.55, "accel": 0.8, "perf": 1.0}

    def guarded(self, sec, name, fn):
        late = time.time() - self.t0 > self.DEADLINE.get(sec, 1.0) * self.args.max_seconds
        if late and not self.args.tiny:
            self.log(sec, name, None, why=f"{sec} past {self.DEADLINE[sec]:.0%} of --max-seconds "
                                          f"{self.args.max_seconds:.0f}")
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            self.log(sec, name, False, error=f"{type(e).__name__}: {str(e)[:300]}")
            traceback.print_exc(limit=4)

    def mk(self, shape, dtype, layout="cl", scale=1.0, gen=None):
        x = (torch.randn(shape, generator=gen or self.gen) * scale).to(self.dev, dtype)
        if layout == "cl" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def rel(a, b):
        a, b = a.double(), b.double()
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()

    def fwd_bwd(self, fn, ins, expand_grad):
        ins = [t.detach().clone().requires_grad_(True) if t is not None else None for t in ins]
        y = fn(*ins)
        if expand_grad:  # stride-0 upstream gradient, as y.sum().backward() gives
            g = torch.ones((), device=y.device, dtype=y.dtype).expand(y.shape)
        else:
            g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device, y.dtype)
        y.backward(g)
        return y.detach(), [t.grad for t in ins if t is not None]

    def compare(self, sec, name, fn_t, fn_r, ins, dtype, expand_grad=False):
        """Forward + every gradient of fn_t (inputs as given) vs fn_r in float64; then a second run of fn_t
        must be bitwise equal (determinism)."""
        yt, gt = self.fwd_bwd(fn_t, ins, expand_grad)
        yr, gr = self.fwd_bwd(fn_r, [t.double() if t is not None else None for t in ins], expand_grad)
        errs = [self.rel(yt, yr)] + [self.rel(a, b) for a, b in zip(gt, gr)]
        yt2, gt2 = self.fwd_bwd(fn_t, ins, expand_grad)
        det = torch.equal(yt, yt2) and all(torch.equal(a, b) for a, b in zip(gt, gt2))
        ok = max(errs) <= TOL[dtype] and det and yt.dtype == dtype and yt.shape == yr.shape
        self.log(sec, name, ok, errs=[f"{e:.1e}" for e in errs], deterministic=det)
        return ok

    # ------------------------------------------------------------------------------------------ selftest
    def selftest(self):
        ops.reset_selftest()
        x = torch.zeros(1, device=self.dev)
        for dt in (BF16, F16, F32):
            for op in ops.OPS:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    ok = ops.triton_usable(x.to(dt), op)
                self.log("selftest", f"{op} {NAMES[dt]}", ok, warnings=[str(m.message)[:200] for m in w])

    # ------------------------------------------------------------------------------------------ correct
    def correct(self):
        t = self.args.tiny
        # (B, C, H, W), k, dilation, act, bias, dtypes
        every = (BF16, F16, F32)
        dw = ([((2, 32, 5, 6), 3, 1, "gelu", True, every), ((1, 24, 5, 6), 7, 1, "relu", False, (F32,)),
               ((1, 8, 4, 5), 9, 1, "none", True, (BF16,))] if t else
              [((32, 128, 56, 56), 3, 1, "gelu", True, every),       # C % 16 == 0, stage-1 map
               ((16, 384, 28, 28), 7, 1, "none", True, every),       # ConvNeXt's 7x7 with bias
               ((32, 120, 56, 56), 3, 1, "relu", False, (BF16,)),    # C % 16 != 0
               ((16, 256, 28, 28), 5, 2, "hardswish", True, (BF16,)),  # dilation (UniRepLKNet's branches)
               ((8, 256, 32, 32), 13, 1, "none", True, (BF16, F32)),  # UniRepLKNet's merged 13x13 with bias
               ((8, 128, 32, 32), 31, 1, "none", False, (BF16,)),    # large kernel
               ((64, 768, 14, 14), 3, 1, "gelu_tanh", True, (F32,)),  # late stage, few weight-grad programs
               ((2, 64, 7, 7), 3, 1, "relu6", True, (F16,))])
        for shape, k, d, act, bias, dtypes in dw:
            for dt in dtypes:
                layouts = (("cl", "convert"), ("nchw", "convert"), ("nchw", "direct"))
                if t:  # --tiny: every layout once, every dtype once (the interpreter is slow)
                    layouts = {BF16: layouts, F16: layouts[:1], F32: layouts[2:]}[dt] if k == 3 else layouts[1:2]
                for layout, nchw in layouts:
                    def run(shape=shape, k=k, d=d, act=act, bias=bias, dt=dt, layout=layout, nchw=nchw):
                        x = self.mk(shape, dt, layout)
                        w = self.mk((shape[1], 1, k, k), dt, scale=1.0 / k)
                        b = self.mk((shape[1],), dt) if bias else None
                        self.compare("correct", f"dwconv {shape} k{k} d{d} {act} {NAMES[dt]} {layout}/{nchw}",
                                     lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, d, act, nchw=nchw, force_triton=True),
                                     lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, d, act), [x, w, b], dt)
                    self.guarded("correct", f"dwconv {shape} k{k} {NAMES[dt]} {layout}/{nchw}", run)

        def sliced():  # non-dense, misaligned channel slice of a channels-last tensor + stride-0 upstream grad
            big = self.mk((2, 48, 5, 6) if t else (32, 256, 56, 56), BF16)
            x = big[:, 8:40] if t else big[:, 8:136]
            w = self.mk((x.shape[1], 1, 3, 3), BF16, scale=1 / 3)
            self.compare("correct", f"dwconv channel slice {tuple(x.shape)} strides {x.stride()} + expanded dy",
                         lambda x_, w_: ops.dwconv2d(x_, w_, None, 1, "gelu", force_triton=True),
                         lambda x_, w_: ref.dwconv2d_reference(x_, w_, None, 1, "gelu"), [x, w], BF16,
                         expand_grad=True)
        self.guarded("correct", "dwconv slice", sliced)
        lk = ([(4, 2, 16, BF16), (6, 2, 32, F32)] if t else
              [(8, 256, 192, BF16), (14, 256, 384, BF16), (14, 64, 384, F32), (32, 8, 64, F16), (9, 3, 20, BF16)])
        for s, b, c, dt in lk:
            def run(s=s, b=b, c=c, dt=dt):
                kern, v = self.mk((2 * s - 1, 2 * s - 1), F32), self.mk((b, s * s, c), dt)
                blocks = dict(block_m=16, block_n=16, block_c=16) if t else {}  # several tiles under --tiny
                self.compare("correct", f"lkca s{s} B{b} C{c} {NAMES[dt]}",
                             lambda k_, v_: ops.lkca_mix(k_, v_, s, force_triton=True, **blocks),
                             lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s), [kern, v], dt)
            self.guarded("correct", f"lkca s{s} {NAMES[dt]}", run)
        ec = ([((2, 32, 6, 7), 5, BF16, "cl", False), ((1, 16, 5, 5), 3, F32, "nchw", True)] if t else
              [((64, 256, 56, 56), 5, BF16, "cl", False), ((64, 256, 56, 56), 5, BF16, "nchw", True),
               ((64, 1280, 10, 10), 7, BF16, "cl", True), ((1, 64, 150, 150), 3, F32, "nchw", False),
               ((1, 256, 56, 56), 5, F16, "cl", False)])
        for shape, k, dt, layout, bias in ec:
            def run(shape=shape, k=k, dt=dt, layout=layout, bias=bias):
                x, w = self.mk(shape, dt, layout), self.mk((1, 1, k), dt)
                b = self.mk((1,), dt) if bias else None
                extra = dict(splits=2) if t else {}
                self.compare("correct", f"eca {shape} k{k} {NAMES[dt]} {layout}",
                             lambda x_, w_, b_: ops.eca(x_, w_, b_, force_triton=True, **extra),
                             lambda x_, w_, b_: ref.eca_reference(x_, w_, b_), [x, w, b], dt)
            self.guarded("correct", f"eca {shape} {NAMES[dt]} {layout}", run)

    # ------------------------------------------------------------------------------------------ limits
    def _plan(self, fn):
        """Launch grids `fn` would use on a GPU (meta tensors, nothing launched), and its warnings."""
        grids = []
        kt = ops._kernels()
        orig_raw, orig_interp = ops._raw_launch, kt.INTERPRETED
        ops._raw_launch = lambda kernel, grid, device, args, kwargs: grids.append(grid)
        kt.INTERPRETED = False
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                fn()
        finally:
            ops._raw_launch, kt.INTERPRETED = orig_raw, orig_interp
        return grids, [str(m.message) for m in w]

    def limits(self):
        gpu = self.dev == "cuda"
        dev = self.dev if gpu else "meta"

        def wgrad_probe():  # issue 15: weight-gradient grid y = cdiv(B*cdiv(H,8)*cdiv(W,8), 16) = 65536 before
            x = torch.randn(1, 16, 8192, 8192, device=dev, dtype=BF16).contiguous(memory_format=torch.channels_last)
            w = (torch.randn(16, 1, 3, 3, device=dev, dtype=BF16) / 3).requires_grad_(True)

            def run():
                ops.dwconv2d(x, w, None, 1, "none", force_triton=True).float().sum().backward()
            if gpu:
                run()
                wr = w.detach().float().requires_grad_(True)  # fp32 reference (fp64 would need ~26 GB)
                ref.dwconv2d_reference(x.float(), wr, None, 1, "none").sum().backward()
                e = self.rel(w.grad, wr.grad)
                self.log("limits", "dwconv wgrad, 67M pixels in one batch (grid y was 65536)", e <= TOL[BF16],
                         err=f"{e:.1e}")
            else:
                grids, msgs = self._plan(run)
                self.log("limits", "dwconv 67M pixels: planned grids within limits (meta)",
                         all(g[0] < 2 ** 31 and all(v <= 65535 for v in g[1:]) for g in grids) and not msgs,
                         grids=grids[:4], warnings=msgs[:2])
        self.guarded("limits", "wgrad probe", wgrad_probe)

        def eca_probe():  # issue 15: ECA grid z = cdiv(H*W, 64) = 68907 before
            x = torch.randn(1, 16, 2100, 2100, device=dev, dtype=BF16).contiguous(memory_format=torch.channels_last)
            wt = torch.randn(1, 1, 3, device=dev, dtype=BF16)
            if gpu:
                with torch.no_grad():
                    e = self.rel(ops.eca(x, wt, force_triton=True), ref.eca_reference(x.double(), wt.double()))
                self.log("limits", "eca H*W = 4.41M (grid z was 68907)", e <= TOL[BF16], err=f"{e:.1e}")
            else:
                grids, msgs = self._plan(lambda: ops.eca(x, wt, force_triton=True))
                self.log("limits", "eca H*W = 4.41M: planned grids within limits (meta)",
                         all(all(v <= 65535 for v in g[1:]) for g in grids) and not msgs, grids=grids, warnings=msgs)
        self.guarded("limits", "eca probe", eca_probe)

        def overflow_plan():  # one image of 2.26e9 elements: refused (KernelLimitError), reference used instead
            x = torch.empty(1, 512, 2100, 2100, device="meta", dtype=BF16)
            w = torch.empty(512, 1, 3, 3, device="meta", dtype=BF16)
            grids, msgs = self._plan(lambda: ops._dwconv_triton(x, w, None, 1, "none", {}, "direct", safe=True))
            self.log("limits", "per-image 2.26e9 elements refused before launch (meta)", False, grids=grids)
        try:
            overflow_plan()
        except ops.KernelLimitError as e:
            self.log("limits", "per-image 2.26e9 elements refused before launch (meta)", True, msg=str(e)[:160])
        except Exception as e:  # noqa: BLE001
            self.log("limits", "per-image 2.26e9 elements refused before launch (meta)", False, error=repr(e)[:300])
        if gpu:
            code = ("import warnings, torch; from common.kernels import ops, reference as ref\n"
                    "x = torch.randn(1, 512, 2100, 2100, device='cuda', dtype=torch.bfloat16)\n"
                    "w = torch.randn(512, 1, 3, 3, device='cuda', dtype=torch.bfloat16) / 3\n"
                    "with warnings.catch_warnings(record=True) as ws, torch.no_grad():\n"
                    "    warnings.simplefilter('always')\n"
                    "    y = ops.dwconv2d(x, w)[:, -8:]\n"
                    "    r = ref.dwconv2d_reference(x[:, -8:], w[-8:])\n"
                    "torch.cuda.synchronize()\n"
                    "print('warned', any('2^31' in str(m.message) for m in ws))\n"
                    "print('relerr', ((y.float()-r.float()).abs().max()/r.float().abs().max()).item())\n")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                                 cwd=os.getcwd())
            lines = (out.stdout + out.stderr).strip().splitlines()
            ok = out.returncode == 0 and "warned True" in out.stdout and "relerr" in out.stdout and \
                float(out.stdout.split("relerr")[-1].split()[0]) < 2e-2
            self.log("limits", "per-image 2.26e9 elements: falls back with a warning, correct", ok, tail=lines[-2:])
            if torch.cuda.device_count() > 1:
                def second_gpu():
                    x = self.mk((2, 32, 9, 9), BF16).to("cuda:1")
                    w = self.mk((32, 1, 3, 3), BF16).to("cuda:1")
                    assert torch.cuda.current_device() == 0
                    y = ops.dwconv2d(x, w, force_triton=True)
                    e = self.rel(y, ref.dwconv2d_reference(x.double(), w.double()))
                    self.log("limits", "tensor on cuda:1 without set_device", e <= TOL[BF16], err=f"{e:.1e}")
                self.guarded("limits", "second gpu", second_gpu)
            else:
                self.log("limits", "tensor on cuda:1 without set_device", None, why="one GPU")

    # ------------------------------------------------------------------------------------------ accel
    def _papers(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, "papers", "*.py"))
                       if not os.path.basename(p).startswith("_"))
        if self.args.papers:
            names = [n for n in names if n in self.args.papers.split(",")]
        return names

    def accel_model(self, paper):
        mod = importlib.import_module(f"papers.{paper}")
        for fname, factory in mod.MODELS.items():
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    rep = accelerate(factory(num_classes=10))
                except Exception:  # noqa: BLE001 - a factory that needs an img_size: try the real build below
                    rep = {"dwconv": 1, "lkca": 0, "eca": 0}
            if rep["dwconv"] + rep["lkca"] + rep["eca"]:
                break
        else:
            self.log("accel", f"{paper}: nothing to swap", None)
            return
        sizes = (32, 64, 96, 128) if self.args.tiny else (224, 299, 256, 192, 128, 64, 32)
        for size in sizes:
            try:
                torch.manual_seed(0)
                base = factory(num_classes=10, img_size=size).to(self.dev)
                with torch.no_grad():
                    base.eval()(torch.randn(1, 3, size, size, device=self.dev))
                break
            except (ValueError, RuntimeError, TypeError):
                continue
        else:
            raise RuntimeError(f"{paper}.{fname}: no size in {sizes} builds and runs")
        with torch.no_grad():
            for m in base.modules():  # non-trivial BN statistics and LKCA kernels: a double or missing BN shows
                if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                k = getattr(m, "kernel", None)
                if isinstance(k, nn.Parameter):
                    k.normal_(0, 0.1)
        batch = 2 if self.args.tiny else 8
        for layout in (("nchw",) if self.args.tiny else ("cl", "nchw")):
            b0 = copy.deepcopy(base)
            if layout == "cl":
                b0 = b0.to(memory_format=torch.channels_last)
            fast = copy.deepcopy(b0)
            rep = accelerate(fast)
            x = self.mk((batch, 3, size, size), F32, layout)
            b32 = copy.deepcopy(b0)  # its own copy: train-mode forwards update BN statistics
            for mode in ("eval", "train"):  # eval first, so all three share the same BN statistics
                outs, grads = [], []
                # the same model in fp32 without autocast is the yardstick: the accelerated model under bf16
                # autocast must be about as close to it as the plain model under bf16 autocast is (tiny maps
                # with train-mode BN are badly conditioned, so a fixed tolerance would say little)
                for m, amp in ((b32, False), (b0, True), (fast, True)):
                    m.train(mode == "train")
                    m.zero_grad(set_to_none=True)
                    torch.manual_seed(1)
                    with torch.autocast(self.dev, dtype=BF16, enabled=amp), torch.set_grad_enabled(mode == "train"):
                        y = m(x)
                    if mode == "train":
                        y.float().square().mean().backward()
                        grads.append(torch.cat([p.grad.double().flatten() for p in m.parameters()
                                                if p.grad is not None]))
                    outs.append(y.float())
                e_base, e_fast = self.rel(outs[1], outs[0]), self.rel(outs[2], outs[0])
                cos_base = cos_fast = 1.0
                if mode == "train":
                    cos_base = F.cosine_similarity(grads[1], grads[0], dim=0).item()
                    cos_fast = F.cosine_similarity(grads[2], grads[0], dim=0).item()
                ok = e_fast <= max(2 * e_base, 1e-2) and cos_fast >= min(cos_base, 0.999) - 0.01
                self.log("accel", f"{paper}.{fname}@{size} B{batch} {mode} autocast-bf16 {layout}", ok,
                         out_err_vs_fp32=dict(plain=f"{e_base:.1e}", accelerated=f"{e_fast:.1e}"),
                         grad_cos_vs_fp32=dict(plain=f"{cos_base:.5f}", accelerated=f"{cos_fast:.5f}"),
                         swapped={k: rep[k] for k in ("dwconv", "dwconv+bn", "dwconv+act", "lkca", "eca")})

    def accel(self):
        for paper in self._papers():
            self.guarded("accel", paper, lambda paper=paper: self.accel_model(paper))

        def compiled():  # torch.compile over an accelerated model: the swapped modules are graph breaks
            c = 16 if self.args.tiny else 64
            m = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                              nn.BatchNorm2d(c), nn.GELU(), nn.Conv2d(c, c, 7, padding=3, groups=c)).to(self.dev)
            accelerate(m)
            x = self.mk((2 if self.args.tiny else 32, c, 8, 8), F32).requires_grad_(True)
            torch._dynamo.reset()
            backend = "aot_eager" if self.args.tiny else "inductor"
            fc = torch.compile(m, backend=backend)
            for mode in ("train", "eval"):
                m.train(mode == "train")
                ye = m(x)
                ge, = torch.autograd.grad(ye.square().sum(), x)
                yc = fc(x)
                gc, = torch.autograd.grad(yc.square().sum(), x)
                self.log("accel", f"torch.compile({backend}) over an accelerated model, {mode}",
                         self.rel(yc, ye) < 1e-4 and self.rel(gc, ge) < 1e-4,
                         out_err=f"{self.rel(yc, ye):.1e}", grad_err=f"{self.rel(gc, ge):.1e}")
        self.guarded("accel", "torch.compile", compiled)

    # ------------------------------------------------------------------------------------------ perf
    def perf(self):
        if self.dev != "cuda":
            self.log("perf", "all timings", None, why="no CUDA GPU (the interpreter says nothing about speed)")
            return
        from triton.testing import do_bench

        def bench(name, impls, ins, nbytes, check_ref):
            if time.time() - self.t0 > self.args.max_seconds:
                self.log("perf", name, None, why=f"--max-seconds {self.args.max_seconds} reached")
                return
            with torch.no_grad():  # correctness of what is timed, first
                got, want = impls["triton"](*ins), check_ref(*[t.double() if t is not None else None for t in ins])
            err = self.rel(got, want)
            row = {}
            for impl, fn in impls.items():
                for bwd in (False, True):
                    xs = [t.detach().requires_grad_(bwd) if t is not None else None for t in ins]
                    with torch.set_grad_enabled(bwd):
                        y0 = fn(*xs)
                        g = torch.randn_like(y0)
                        f = (lambda fn=fn, xs=xs, g=g: fn(*xs).backward(g)) if bwd else (lambda fn=fn, xs=xs: fn(*xs))
                        row[f"{impl} {'fwd+bwd' if bwd else 'fwd'}"] = round(
                            do_bench(f, grad_to_none=[t for t in xs if t is not None] if bwd else None), 4)
            row["triton fwd, % of the 4.3 TB/s floor"] = round(100 * nbytes / 4.3e12 * 1e3 / row["triton fwd"], 1)
            self.log("perf", name, err <= TOL[BF16], err=f"{err:.1e}", ms=row)

        comp = {}

        def compiled(key, fn):
            if not self.args.compile:
                return {}
            if key not in comp:
                comp[key] = torch.compile(fn, dynamic=False)
            return {"compile": comp[key]}
        for shape, k in (((64, 128, 56, 56), 3), ((32, 384, 28, 28), 7), ((8, 256, 32, 32), 13),
                         ((8, 128, 32, 32), 31), ((64, 768, 14, 14), 3), ((1, 128, 56, 56), 3)):
            for layout in ("cl", "nchw"):
                def run(shape=shape, k=k, layout=layout):
                    x, w, b = self.mk(shape, BF16, layout), self.mk((shape[1], 1, k, k), BF16, scale=1 / k), \
                        self.mk((shape[1],), BF16)
                    impls = {"triton": lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, 1, "gelu"),
                             "cudnn": lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, 1, "gelu")}
                    if layout == "nchw":
                        impls["triton-direct"] = lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, 1, "gelu", nchw="direct")
                    impls.update(compiled(("dw", k), impls["cudnn"]))
                    bench(f"dwconv {shape} k{k} gelu+bias bf16 {layout}", impls, [x, w, b], 4 * x.numel(),
                          lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, 1, "gelu"))
                self.guarded("perf", f"dwconv {shape} k{k} {layout}", run)
        for shape in ((64, 256, 56, 56), (1, 256, 56, 56)):
            for layout in ("cl", "nchw"):
                def run(shape=shape, layout=layout):
                    x, w = self.mk(shape, BF16, layout), self.mk((1, 1, 5), BF16)
                    impls = {"triton": lambda x_, w_: ops.eca(x_, w_),
                             "eager": lambda x_, w_: ref.eca_reference(x_, w_)}
                    impls.update(compiled("eca", impls["eager"]))
                    bench(f"eca {shape} bf16 {layout}", impls, [x, w], 6 * x.numel(), ref.eca_reference)
                self.guarded("perf", f"eca {shape} {layout}", run)
        for s, b, c in ((8, 256, 192), (14, 256, 384)):
            def run(s=s, b=b, c=c):
                kern, v = self.mk((2 * s - 1, 2 * s - 1), F32), self.mk((b, s * s, c), BF16)
                impls = {"triton": lambda k_, v_: ops.lkca_mix(k_, v_, s),
                         "gemm": lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s)}
                impls.update(compiled(("lkca", s), impls["gemm"]))
                bench(f"lkca s{s} B{b} C{c} bf16", impls, [kern, v], 4 * v.numel(),
                      lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s))
            self.guarded("perf", f"lkca s{s}", run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_smoke"))
    p.add_argument("--only", default="selftest,correct,limits,accel,perf")
    p.add_argument("--papers", default="", help="comma-separated paper modules for the accel section "
                   "(default: every papers/*.py)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1: checks this "
                   "script's plumbing and the kernels' logic, measures nothing")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="time torch.compile of the eager baselines (perf)")
    p.add_argument("--max-seconds", type=float, default=280.0)
    args = p.parse_args(argv)
    if args.tiny and not ops.interpret_requested():
        print("--tiny runs the kernels on CPU and needs TRITON_INTERPRET=1 in the environment")
        return 2
    if not args.tiny and (not torch.cuda.is_available() or ops.interpret_requested()):
        print("common.kernels.gpu_smoke needs a CUDA GPU with TRITON_INTERPRET unset (or --tiny on CPU with "
              "TRITON_INTERPRET=1); nothing was run")
        return 2
    torch.backends.cudnn.allow_tf32 = False  # the fp32 references must not use TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    sm = Smoke(args)
    sm.gen = torch.Generator().manual_seed(0)
    import triton
    env = dict(torch=torch.__version__, triton=triton.__version__,
               device=torch.cuda.get_device_name() if sm.dev == "cuda" else "cpu (interpreter)", tiny=args.tiny)
    print(json.dumps(env), flush=True)
    for sec in [s for s in args.only.split(",") if s]:
        getattr(sm, sec)()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_smoke.json"), "w") as f:
        json.dump(dict(env, selftest={f"{k[0]} {k[1]} {k[2]}": v for k, v in ops.selftest_status().items()},
                       results=sm.res), f, indent=1, default=str)
    n = {s: sum(r["status"] == s for r in sm.res) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped ({time.time() - sm.t0:.0f}s)")
    return 1 if n["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())

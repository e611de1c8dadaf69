"""Benchmark the Triton kernels against their baselines, on the shapes the paper models actually run.

    python -m common.kernels.bench                 # everything (needs a CUDA GPU; ~10 min on an H200)
    python -m common.kernels.bench --quick         # the largest shape per kernel and model, no e2e
    python -m common.kernels.bench --only dwconv --no-compile --out runs/bench.json

Needs a CUDA GPU: on a machine without one it says so and exits with status 2 (nothing is measured on CPU:
the interpreter tells nothing about speed).

What it measures
* Shapes: each paper model's first variant that has something to swap is built at the paper's resolution,
  `accelerate`d, and run once (batch 1) with forward pre-hooks recording the input shape of every swapped
  depthwise conv / LKCA / ECA module; the unique shapes are then timed at the benchmark batch size
  (HIRI-ViT-S at 448 and iiANET at 299 with batch 64, LKCA-B at its default size with batch 256; see
  `PAPERS`). If a paper module is missing, its row is skipped (with a note).
* Per shape, forward and forward+backward, in `--dtype` (bf16 default): the Triton op, the eager PyTorch
  baseline (cuDNN depthwise conv + bias + activation; LKCA's conv view and Toeplitz-GEMM view; eager ECA) and
  `torch.compile` of the same baseline. Timing: `triton.testing.do_bench` (CUDA events, L2 flushed, median).
* Reported: time, achieved GB/s and TFLOP/s, the fraction of the roofline floor
  t_floor = max(bytes_min / BW, flops / P) (bytes_min: every input read once, every output written once;
  P: FFMA for depthwise conv and ECA, tensor cores for LKCA in bf16/fp16) and the speed-ups, plus a
  max-error check of the Triton result against the reference (so a fast wrong kernel is flagged).
* End to end (`--e2e`, default on): one training step (forward + backward + SGD step, bf16 autocast) of
  each paper model, eager vs accelerated, and the speed-up that goes into the README table.

Peaks default to the H200 figures of shared/specs/kernels_notes.md (4.3 TB/s measured copy bandwidth, 67
TFLOP/s FFMA datasheet, 790 TFLOP/s measured bf16 tensor core); pass --bw/--fma/--tc for another GPU.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from . import ops
from . import reference as ref
from .accelerate import TritonDWConv2d, accelerate

# paper module, factory, img_size, benchmark batch (the shapes: HIRI-ViT-S stages at 448, iiANET at
# 299, LKCA-B at batch 256)
PAPERS = [
    ("hiri_vit", "hiri_vit_s", 448, 64),
    ("iianet", "iianet", 299, 64),
    ("lkca", "lkca_b", 32, 256),     # CIFAR size (the factory's default)
    ("lkca", "lkca_b", 64, 256),     # Tiny-ImageNet size
]
# --smoke (CPU, interpreter): exercise every code path of this script at tiny sizes; measures nothing
SMOKE_PAPERS = [("hiri_vit", "hiri_vit_s", 64, 2), ("iianet", "iianet", 64, 2), ("lkca", "lkca_b", 32, 2)]
TARGET_FLOOR = 0.70  # depthwise conv (k <= 7) and ECA: fraction of the memory floor the issue asks for
TARGET_LKCA_CONV = 20.0  # LKCA: speed-up over the conv view


def _bytes(t_elems, dtype):
    return t_elems * torch.finfo(dtype).bits // 8


def collect_shapes(paper, factory_name, img_size, device):
    """Unique (kind, params) of every module accelerate swaps in the model, from one batch-1 forward."""
    mod = importlib.import_module(f"papers.{paper}")
    factory = mod.MODELS[factory_name]
    kw = {"num_classes": 1000}
    if img_size is not None:
        kw["img_size"] = img_size
    model = factory(**kw).to(device).eval()
    accelerate(model)
    size = img_size or getattr(model, "img_size", None) or 224
    if isinstance(size, (tuple, list)):
        size = size[0]
    shapes, hooks = {}, []

    def rec(kind, m):
        def hook(_, args):
            x = args[0]
            if kind == "dwconv":
                act = m.__dict__.get("_hvp_act", (None, "none"))[1]
                key = ("dwconv", tuple(x.shape[1:]), m.kernel_size[0], m.dilation[0], act,
                       m.bias is not None or m.__dict__.get("_hvp_bn") is not None)
            elif kind == "lkca":
                key = ("lkca", m.grid, m.to_v.out_features)
            else:
                key = ("eca", tuple(x.shape[1:]), m.conv.kernel_size[0])
            shapes[key] = shapes.get(key, 0) + 1
        return hook

    for m in model.modules():
        if isinstance(m, TritonDWConv2d):
            hooks.append(m.register_forward_pre_hook(rec("dwconv", m)))
        elif type(m).__name__ == "TritonLKCA":
            hooks.append(m.to_v.register_forward_pre_hook(rec("lkca", m)))
        elif type(m).__name__ == "TritonECA":
            hooks.append(m.register_forward_pre_hook(rec("eca", m)))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size, device=device))
    for h in hooks:
        h.remove()
    return shapes, size


# ---------------------------------------------------------------------------------------------------------
# one benchmark case = (name, {impl: fn}, inputs, bytes, flops, peak unit)
# ---------------------------------------------------------------------------------------------------------
def _cpu_bench(fn, **_):
    import time
    fn()
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def _do_bench():
    if torch.cuda.is_available() and not ops.interpret_requested():
        from triton.testing import do_bench
        return do_bench
    return _cpu_bench


def _time(fn, bwd, grad_out=None):
    do_bench = _do_bench()
    if not bwd:
        return do_bench(lambda: fn())
    y = fn()
    g = torch.randn_like(y) if grad_out is None else grad_out

    def step():
        fn().backward(g)
    return do_bench(step, grad_to_none=None)


def _layout(x, layout):
    return x.to(memory_format=torch.channels_last) if layout == "cl" else x.contiguous()


def case_dwconv(key, batch, dtype, dev, layout="cl"):
    _, (c, h, w), k, dil, act, has_bias = key
    x = _layout(torch.randn(batch, c, h, w, device=dev, dtype=dtype), layout)
    wt = (torch.randn(c, 1, k, k, device=dev, dtype=dtype) / k)
    b = torch.randn(c, device=dev, dtype=dtype) if has_bias else None
    n = x.numel()
    flops = 2.0 * n * k * k
    impls = {
        "triton": lambda x_, w_, b_: ops.dwconv2d(x_, w_, b_, dil, act),
        "eager": lambda x_, w_, b_: ref.dwconv2d_reference(x_, w_, b_, dil, act),
    }
    name = f"dwconv k{k} d{dil} {act}{'+b' if has_bias else ''} ({batch},{c},{h},{w}) {layout}"
    return dict(name=name, kernel="dwconv", impls=impls, inputs=[x, wt, b], bytes_fwd=_bytes(2 * n, dtype),
                bytes_fb=_bytes(5 * n, dtype), flops_fwd=flops, flops_fb=3 * flops, unit="fma",
                floor_target=TARGET_FLOOR if k <= 7 else None)


def case_lkca(key, batch, dtype, dev, layout=None):
    _, s, c = key
    n = s * s
    kern = torch.randn(2 * s - 1, 2 * s - 1, device=dev, dtype=dtype)
    v = torch.randn(batch, n, c, device=dev, dtype=dtype)
    flops = 2.0 * n * n * batch * c
    impls = {
        "triton": lambda k_, v_: ops.lkca_mix(k_, v_, s),
        "gemm": lambda k_, v_: ref.lkca_mix_gemm(k_, v_, s),
        "conv": lambda k_, v_: ref.lkca_mix_conv(k_, v_, s),
    }
    return dict(name=f"lkca s{s} ({batch},{n},{c})", kernel="lkca", impls=impls, inputs=[kern, v],
                bytes_fwd=_bytes(2 * v.numel(), dtype), bytes_fb=_bytes(5 * v.numel(), dtype),
                flops_fwd=flops, flops_fb=3 * flops, unit="tc" if dtype != torch.float32 else "fma",
                floor_target=None)


def case_eca(key, batch, dtype, dev, layout="cl"):
    _, (c, h, w), k = key
    x = _layout(torch.randn(batch, c, h, w, device=dev, dtype=dtype), layout)
    wt = torch.randn(1, 1, k, device=dev, dtype=dtype)
    n = x.numel()
    impls = {"triton": lambda x_, w_: ops.eca(x_, w_), "eager": lambda x_, w_: ref.eca_reference(x_, w_)}
    return dict(name=f"eca k{k} ({batch},{c},{h},{w}) {layout}", kernel="eca", impls=impls, inputs=[x, wt],
                bytes_fwd=_bytes(2 * n, dtype), bytes_fb=_bytes(5 * n, dtype), flops_fwd=4.0 * n,
                flops_fb=10.0 * n, unit="fma", floor_target=TARGET_FLOOR)


def run_case(case, args, peaks):
    rows = []
    impls = dict(case["impls"])
    if not args.no_compile:
        base = "gemm" if case["kernel"] == "lkca" else "eager"
        impls["compile"] = torch.compile(impls[base], dynamic=False)
    # correctness of the Triton result first
    with torch.no_grad():
        got = impls["triton"](*case["inputs"]).float()
        want = impls["gemm" if case["kernel"] == "lkca" else "eager"](*case["inputs"]).float()
        err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
    for bwd in (False, True):
        ins = [t.detach().requires_grad_(bwd) if t is not None else None for t in case["inputs"]]
        times = {}
        for impl, fn in impls.items():
            try:
                if bwd:
                    times[impl] = _time(lambda: fn(*ins), True)
                else:
                    with torch.no_grad():
                        times[impl] = _time(lambda: fn(*ins), False)
            except Exception as e:  # noqa: BLE001 - record and continue
                times[impl] = float("nan")
                print(f"  {case['name']} {impl} {'fwd+bwd' if bwd else 'fwd'}: {type(e).__name__}: {e}")
        nbytes = case["bytes_fb" if bwd else "bytes_fwd"]
        flops = case["flops_fb" if bwd else "flops_fwd"]
        floor_ms = 1e3 * max(nbytes / peaks["bw"], flops / peaks[case["unit"]])
        t = times["triton"]
        row = dict(case=case["name"], kernel=case["kernel"], pass_="fwd+bwd" if bwd else "fwd",
                   ms={k: round(v, 4) for k, v in times.items()}, gbps=round(nbytes / (t * 1e-3) / 1e9, 1),
                   tflops=round(flops / (t * 1e-3) / 1e12, 2), floor_ms=round(floor_ms, 4),
                   frac_floor=round(floor_ms / t, 3), max_rel_err=err,
                   speedup={k: round(v / t, 2) for k, v in times.items() if k != "triton"})
        checks = [all(v > t for k, v in times.items() if k in ("eager", "compile", "gemm") and not math.isnan(v))]
        if case["floor_target"] is not None:
            checks.append(row["frac_floor"] >= case["floor_target"])
        if case["kernel"] == "lkca":
            checks.append(row["speedup"].get("conv", 0) >= TARGET_LKCA_CONV)
            checks.append(row["speedup"].get("gemm", 0) >= 1.0)
        row["meets_targets"] = all(checks)
        rows.append(row)
        print(f"  {row['case']:<44} {row['pass_']:<7} triton {t:8.4f} ms  "
              + "  ".join(f"{k} {v:8.4f}" for k, v in times.items() if k != "triton")
              + f"  | {row['gbps']:7.1f} GB/s {row['tflops']:6.2f} TF/s  {100 * row['frac_floor']:5.1f}% of floor"
              + f"  err {err:.1e}  {'OK' if row['meets_targets'] else 'MISS'}", flush=True)
    return rows


def e2e(paper, factory_name, img_size, batch, dtype, dev, steps=10, layout="cl"):
    """ms per training step (fwd + bwd + SGD, autocast) eager vs accelerated, same weights and batch."""
    do_bench = _do_bench()
    mod = importlib.import_module(f"papers.{paper}")
    kw = {"num_classes": 1000}
    if img_size is not None:
        kw["img_size"] = img_size
    base = mod.MODELS[factory_name](**kw).to(dev).train()
    if layout == "cl":
        base = base.to(memory_format=torch.channels_last)
    fast = copy.deepcopy(base)
    report = accelerate(fast)
    size = img_size or getattr(base, "img_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[0]
    x = _layout(torch.randn(batch, 3, size, size, device=dev), layout)
    y = torch.randint(0, 1000, (batch,), device=dev)
    amp = dev.type == "cuda"
    res = {}
    for name, m in (("eager", base), ("accelerated", fast)):
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)

        def step():
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        res[name] = do_bench(step, warmup=3 * steps, rep=10 * steps * 10)
        m.eval()  # inference: eval-mode BN is folded and the activation fused into the depthwise kernel

        @torch.no_grad()
        def infer():
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                m(x)
        res[name + "_infer"] = do_bench(infer, warmup=3 * steps, rep=10 * steps * 10)
        m.train()
    return dict(model=f"{factory_name}@{size} b{batch} {layout}", ms=res,
                speedup=round(res["eager"] / res["accelerated"], 3),
                speedup_infer=round(res["eager_infer"] / res["accelerated_infer"], 3),
                swapped={k: report[k] for k in ("dwconv", "dwconv+bn", "dwconv+act", "lkca", "eca")})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--only", nargs="*", choices=["dwconv", "lkca", "eca"], default=None)
    p.add_argument("--quick", action="store_true", help="largest shape per kernel and model; no e2e")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--batch-scale", type=float, default=1.0, help="multiply every benchmark batch")
    p.add_argument("--bw", type=float, default=4.3e12, help="memory bandwidth, B/s (H200 measured copy)")
    p.add_argument("--fma", type=float, default=67e12, help="FFMA peak, FLOP/s")
    p.add_argument("--tc", type=float, default=790e12, help="bf16/fp16 tensor-core peak, FLOP/s")
    p.add_argument("--layouts", default="cl,nchw", help="memory formats of the depthwise/ECA inputs and the "
                   "e2e models: cl (channels-last) and/or nchw (NCHW inputs are converted to channels-last "
                   "around the depthwise kernel: ops.NCHW_POLICY)")
    p.add_argument("--out", default="runs/kernels_bench.json")
    p.add_argument("--smoke", action="store_true", help="CPU + TRITON_INTERPRET=1, tiny sizes: test this "
                   "script's code paths (the times it prints mean nothing)")
    args = p.parse_args(argv)
    papers = PAPERS
    if args.smoke:
        if not ops.interpret_requested():
            print("--smoke needs TRITON_INTERPRET=1")
            return 2
        papers, args.no_compile, args.dtype = SMOKE_PAPERS, True, "fp32"
    elif not torch.cuda.is_available():
        print("common.kernels.bench needs a CUDA GPU; none is available here, so nothing was measured. The "
              "CPU interpreter (TRITON_INTERPRET=1) checks correctness only: pytest tests/test_kernels.py.")
        return 2
    elif ops.interpret_requested():
        print("unset TRITON_INTERPRET to benchmark the compiled kernels")
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    dev = torch.device("cpu" if args.smoke else "cuda")
    peaks = {"bw": args.bw, "fma": args.fma, "tc": args.tc}
    layouts = [t for t in args.layouts.split(",") if t]
    if not set(layouts) <= {"cl", "nchw"}:
        p.error(f"--layouts: cl and/or nchw, got {args.layouts}")
    import triton
    env = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               gpu="CPU interpreter (smoke: not a measurement)" if args.smoke else torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               dtype=args.dtype, peaks=peaks)
    print(json.dumps(env))
    if "papers" not in sys.modules:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        sys.path.insert(0, root)
    results = dict(env=env, kernels=[], e2e=[], notes=[])
    builders = {"dwconv": case_dwconv, "lkca": case_lkca, "eca": case_eca}
    for paper, factory, img, batch in papers:
        batch = max(1, int(batch * args.batch_scale))
        try:
            shapes, size = collect_shapes(paper, factory, img, dev)
        except Exception as e:  # noqa: BLE001
            results["notes"].append(f"{paper}.{factory}: skipped ({type(e).__name__}: {e})")
            print(results["notes"][-1])
            continue
        print(f"{paper}.{factory} @ {size}px, batch {batch}: {len(shapes)} unique shapes "
              f"({sum(shapes.values())} module calls)")
        keys = [k for k in shapes if args.only is None or k[0] in args.only]
        if args.quick:  # the largest shape of each kind
            best = {}
            for k in keys:
                numel = math.prod(k[1]) if isinstance(k[1], tuple) else k[1] ** 2 * k[2]
                if k[0] not in best or numel > best[k[0]][0]:
                    best[k[0]] = (numel, k)
            keys = [v[1] for v in best.values()]
        for k in keys:
            try:
                for layout in (layouts if k[0] != "lkca" else [None]):
                    for row in run_case(builders[k[0]](k, batch, dtype, dev, layout), args, peaks):
                        row.update(paper=paper, calls_per_forward=shapes[k], layout=layout)
                        results["kernels"].append(row)
            except Exception as e:  # noqa: BLE001
                results["notes"].append(f"{paper} {k}: {type(e).__name__}: {e}")
                print(results["notes"][-1])
            torch.cuda.empty_cache()
        if not (args.quick or args.no_e2e):
            for layout in layouts:
                try:
                    r = e2e(paper, factory, img, batch, dtype, dev, layout=layout)
                    results["e2e"].append(r)
                    print(f"  e2e train step {r['model']}: eager {r['ms']['eager']:.2f} ms, accelerated "
                          f"{r['ms']['accelerated']:.2f} ms, speed-up {r['speedup']:.3f}x; inference speed-up "
                          f"{r['speedup_infer']:.3f}x  swapped {r['swapped']}")
                except Exception as e:  # noqa: BLE001
                    results["notes"].append(f"{paper} e2e {layout}: {type(e).__name__}: {e}")
                    print(results["notes"][-1])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    print(markdown(results))
    return 0


def markdown(results):
    """The README tables from a results dict."""
    env = results["env"]
    lines = [f"{env['gpu']}, {env['date']}, torch {env['torch']}, triton {env['triton']}, {env['dtype']}", "",
             "| shape | pass | Triton ms | eager / GEMM ms | compile ms | conv view ms | % of floor | targets |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["kernels"]:
        ms = r["ms"]
        lines.append(f"| {r['case']} | {r['pass_']} | {ms['triton']:.4f} | {ms.get('eager', ms.get('gemm', float('nan'))):.4f}"
                     f" | {ms.get('compile', float('nan')):.4f} | {ms.get('conv', float('nan')):.4f} | "
                     f"{100 * r['frac_floor']:.0f}% | {'met' if r['meets_targets'] else 'missed'} |")
    if results["e2e"]:
        lines += ["", "| model | eager train step ms | accelerated ms | speed-up | inference speed-up | GPU, date |",
                  "|---|---|---|---|---|---|"]
        for r in results["e2e"]:
            lines.append(f"| {r['model']} | {r['ms']['eager']:.2f} | {r['ms']['accelerated']:.2f} | "
                         f"{r['speedup']:.2f}x | {r['speedup_infer']:.2f}x | {env['gpu']}, {env['date'][:10]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""`accelerate(model)`: swap the Triton ops into a built paper model, in place, from outside the paper file.

What is matched (by structure; paper files never import this package):

* **Depthwise conv**: any exact `nn.Conv2d` with `groups == in == out channels`, stride 1, odd square
  kernel, equal dilation d on both axes, zero padding `d*(k-1)//2` ('same'). Inside a plain `nn.Sequential`
  a directly following `nn.BatchNorm2d(C)` and a following activation (`nn.ReLU`, `nn.ReLU6`, `nn.GELU`,
  `nn.SiLU`, `nn.Hardswish`) are fused into the kernel when that is exact:
  - BN in eval mode (running statistics): folded into the conv's weight and bias, then the activation is
    fused into the kernel's epilogue;
  - BN in train mode (batch statistics): not foldable; the kernel fuses only the bias, BN stays a separate
    module (it computes batch statistics and updates its running stats exactly as before), and so does the
    activation after it;
  - no BN: the activation is fused directly.
* **LKCA**: a module of a class named `LKCA` with a square `kernel` parameter (K, K), K = 2*grid-1, an int
  `grid`, and a `mix(v)` method: `mix` is replaced by the fused Toeplitz-tile kernel.
* **ECA**: a module of a class named `ECA` whose `conv` is `nn.Conv1d(1, 1, k, padding=(k-1)//2)`: its
  forward (pool + conv1d + sigmoid + rescale) is replaced by the two fused kernels.

How (so `state_dict` keys, parameters, buffers and hooks are untouched): each matched module's `__class__`
is switched to a subclass that overrides only `forward` / `mix`; the fused conv keeps plain references to
its BN and activation modules (and to the container and the keys they were found at) outside `_modules`. A
fused BN/activation module is skipped only for the exact tensor the conv produced with that fusion (the
tensor carries a marker), so it still behaves normally if it is called on anything else. At every call the
conv checks that the BN/activation are still the modules right after it in that container; one that was
replaced (e.g. by `nn.SyncBatchNorm.convert_sync_batchnorm`, which builds new BN modules for DDP) is no
longer fused (a warning, once), so the replacement runs exactly once. `restore(model)` switches every class
back. The swapped methods are opaque to `torch.compile` (`ops.compile_opaque`, a lazy
`torch.compiler.disable`): compiling an accelerated model works, with a graph break around each swapped
module.

Before a LKCA or ECA module is swapped, its original method and the reference op are compared once on a small
random input; a module that does not compute what its contract says is left alone with a warning.

Dispatch happens per call (`common.kernels.ops.triton_usable(x, op)`): on a CUDA tensor the Triton kernels
run once their one-time self-test for that (op, dtype, device) has passed; on a CPU tensor they run only under
`TRITON_INTERPRET=1` (Triton's CPU interpreter); otherwise (or with `HVP_KERNELS=reference`, or after a
failed self-test) the swapped modules call the original PyTorch code, so outputs are unchanged.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from . import ops
from . import reference as ref

_MARK = "_hvp_fused"  # attribute on a conv's output tensor: the modules whose work the kernel already did


# ---------------------------------------------------------------------------------------------------------
# swapped classes
# ---------------------------------------------------------------------------------------------------------
class TritonDWConv2d(nn.Conv2d):
    """An `nn.Conv2d` (depthwise, stride 1, 'same') whose forward runs `ops.dwconv2d`, folding the BN and
    fusing the activation recorded by `accelerate` when exact. Same parameters and state_dict as nn.Conv2d.

    The BN/activation are fused only while they still sit right after this conv in the same container
    (checked at every call): if one was replaced after `accelerate` (e.g. `convert_sync_batchnorm` swaps in
    a SyncBatchNorm), the conv stops fusing it, warns once, and the replacement runs as a normal module."""

    @ops.compile_opaque
    def forward(self, x):
        if x.dim() != 4 or not ops.triton_usable(x, "dwconv2d"):
            return nn.Conv2d.forward(self, x)
        bn, act_mod = _live_fusion(self)
        weight, bias, fused, act = self.weight, self.bias, [], "none"
        if bn is not None:
            if ref.bn_foldable(bn):
                weight, bias = ref.fold_bn(weight, bias, bn)
                fused.append(bn)
            else:
                act_mod = None  # BN (batch statistics) runs in between: the activation cannot be fused
        if act_mod is not None:
            act = self.__dict__["_hvp_act"][1]
            fused.append(act_mod)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # what autocast would do for F.conv2d
            x = x.to(torch.get_autocast_dtype(dev))
        y = ops.dwconv2d(x, weight, bias, self.dilation[0], act)
        if fused:
            setattr(y, _MARK, tuple(fused))
        return y


def _live_fusion(conv):
    """(bn, act module) that `accelerate` recorded for `conv`, each kept only if it is still the module right
    after the conv (after the BN) in the container it was found in."""
    d = conv.__dict__
    bn = d.get("_hvp_bn")
    act_mod = d.get("_hvp_act", (None, None))[0]
    link = d.get("_hvp_link")
    if link is None or (bn is None and act_mod is None):
        return None, None
    seq, kc, kb, ka = link
    mods = seq._modules
    keys = [k for k, m in mods.items() if m is not None]
    pos = keys.index(kc) if kc in mods and mods[kc] is conv else None
    nxt = pos + 1 if pos is not None else None
    ok_bn = bn is None or (nxt is not None and nxt < len(keys) and keys[nxt] == kb and mods[kb] is bn)
    if bn is not None and nxt is not None:
        nxt += 1
    ok_act = act_mod is None or (ok_bn and nxt is not None and nxt < len(keys) and keys[nxt] == ka
                                 and mods[ka] is act_mod)
    if not (ok_bn and ok_act):
        ops._warn_once(f"stale:{id(conv)}", "accelerate: a BatchNorm/activation that was fused into a depthwise "
                       "conv has been replaced or moved since accelerate() (e.g. by convert_sync_batchnorm); the "
                       "conv no longer fuses it and the new module runs on its own (outputs unchanged). Call "
                       "accelerate(model) again to fuse what can be fused.")
        if not ok_bn:
            return None, None
        return bn, None
    return bn, act_mod


@ops.compile_opaque
def _skip_if_fused(self, x, *args, **kwargs):
    if any(m is self for m in getattr(x, _MARK, ())):
        return x  # the preceding TritonDWConv2d already applied this module (folded BN / fused activation)
    return self._hvp_orig_class.forward(self, x, *args, **kwargs)


@ops.compile_opaque
def _lkca_mix(self, v):
    if v.dim() == 3 and v.shape[1] == self.grid * self.grid and ops.triton_usable(v, "lkca_mix"):
        return ops.lkca_mix(self.kernel, v, self.grid)
    return self._hvp_orig_class.mix(self, v)


@ops.compile_opaque
def _eca_forward(self, x):
    if x.dim() == 4 and ops.triton_usable(x, "eca"):
        return ops.eca(x, self.conv.weight, self.conv.bias)
    return self._hvp_orig_class.forward(self, x)


_SUBCLASSES: dict = {}


def _subclass(orig: type, kind: str) -> type:
    key = (orig, kind)
    if key not in _SUBCLASSES:
        body = {"skip": {"forward": _skip_if_fused}, "lkca": {"mix": _lkca_mix},
                "eca": {"forward": _eca_forward}}[kind]
        _SUBCLASSES[key] = type(f"Triton{orig.__name__}" if kind != "skip" else f"Fusable{orig.__name__}",
                                (orig,), dict(body, _hvp_orig_class=orig, __module__=__name__))
    return _SUBCLASSES[key]


def _swap(module: nn.Module, cls: type) -> None:
    if "_hvp_orig_class" not in module.__dict__:
        module.__dict__["_hvp_orig_class"] = type(module)
    module.__class__ = cls


# ---------------------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------------------
def is_same_depthwise(m: nn.Module) -> bool:
    """An exact nn.Conv2d that is depthwise, stride 1, odd square kernel, 'same' zero padding."""
    if type(m) is not nn.Conv2d:
        return False
    k, d = m.kernel_size, m.dilation
    if not (m.groups == m.in_channels == m.out_channels and m.stride == (1, 1) and k[0] == k[1]
            and k[0] % 2 == 1 and d[0] == d[1] and m.padding_mode == "zeros"):
        return False
    pad = d[0] * (k[0] - 1) // 2
    return m.padding in ((pad, pad), "same")


def _orig_name(m: nn.Module) -> str:
    return m.__dict__.get("_hvp_orig_class", type(m)).__name__


def _is_lkca(m: nn.Module) -> bool:
    kern, s = getattr(m, "kernel", None), getattr(m, "grid", None)
    return (_orig_name(m) == "LKCA" and isinstance(kern, torch.Tensor) and isinstance(s, int)
            and callable(getattr(m, "mix", None)) and tuple(kern.shape) == (2 * s - 1, 2 * s - 1))


def _is_eca(m: nn.Module) -> bool:
    conv = getattr(m, "conv", None)
    return (_orig_name(m) == "ECA" and type(conv) is nn.Conv1d and conv.in_channels == 1
            and conv.out_channels == 1 and conv.kernel_size[0] % 2 == 1 and conv.stride == (1,)
            and conv.dilation == (1,) and conv.groups == 1 and conv.padding == ((conv.kernel_size[0] - 1) // 2,)
            and conv.padding_mode == "zeros")


def _probe_device(m):
    p = next(m.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


@torch.no_grad()
def _contract_holds(m: nn.Module, kind: str) -> bool:
    """Run the module's own method and the reference op once on a small random input (reference backend)."""
    dev, dt = _probe_device(m)
    if dev.type == "meta":  # a model built on the meta device (no values): the structure has to do
        return True
    gen = torch.Generator(device="cpu").manual_seed(0)
    try:
        if kind == "lkca":
            c = getattr(getattr(m, "to_v", None), "out_features", 8)
            v = torch.randn(2, m.grid * m.grid, c, generator=gen).to(dev, dt)
            mine, want = m.mix(v), ref.lkca_mix_gemm(m.kernel, v, m.grid)
            if float(m.kernel.abs().max()) == 0.0:  # zero-initialised kernel: probe with a random one
                k0 = m.kernel.detach().clone()
                m.kernel.copy_(torch.randn(k0.shape, generator=gen).to(dev, dt))
                try:
                    mine, want = m.mix(v), ref.lkca_mix_gemm(m.kernel, v, m.grid)
                finally:
                    m.kernel.copy_(k0)
        else:
            c = 7
            x = torch.randn(2, c, 3, 4, generator=gen).to(dev, dt)
            mine, want = m(x), ref.eca_reference(x, m.conv.weight, m.conv.bias)
    except Exception as e:  # noqa: BLE001 - any failure means the contract does not hold
        warnings.warn(f"accelerate: {type(m).__name__} probe failed ({type(e).__name__}: {e}); left unchanged")
        return False
    tol = 1e-4 if dt in (torch.float32, torch.float64) else 3e-2
    return mine.shape == want.shape and torch.allclose(mine.float(), want.float(), rtol=tol, atol=tol)


def accelerate(model: nn.Module, *, dwconv: bool = True, lkca: bool = True, eca: bool = True,
               verbose: bool = False) -> dict:
    """Swap the Triton ops into `model` in place (same parameters, buffers and state_dict keys).

    Returns a report: counts per swapped kind ("dwconv", "dwconv+bn", "dwconv+act", "lkca", "eca"), the
    names of the swapped modules, and "backend" (which path runs now). Calling it twice is harmless."""
    report = {"dwconv": 0, "dwconv+bn": 0, "dwconv+act": 0, "lkca": 0, "eca": 0, "modules": [],
              "backend": ops.backend_summary()}
    done = set()
    names = {id(m): n for n, m in model.named_modules()}
    if dwconv:
        # 1. fusion chains inside plain nn.Sequential containers: conv [-> BN] [-> act]
        for seq in model.modules():
            if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
                continue
            items = [(k, m) for k, m in seq._modules.items() if m is not None]  # execution order
            keys, kids = [k for k, _ in items], [m for _, m in items]
            for idx, conv in enumerate(kids):
                if id(conv) in done or not (is_same_depthwise(conv) or isinstance(conv, TritonDWConv2d)):
                    continue
                c = conv.out_channels
                nxt = kids[idx + 1] if idx + 1 < len(kids) else None
                bn = None
                if (type(nxt) is nn.BatchNorm2d or getattr(nxt, "_hvp_orig_class", None) is nn.BatchNorm2d) \
                        and nxt.num_features == c:
                    bn = nxt
                    nxt = kids[idx + 2] if idx + 2 < len(kids) else None
                mod, act = nxt, None
                if mod is not None:
                    act = _orig_act_name(mod) if "_hvp_orig_class" in mod.__dict__ else ref.act_name(mod)
                _swap(conv, TritonDWConv2d)
                for key in ("_hvp_bn", "_hvp_act", "_hvp_link"):
                    conv.__dict__.pop(key, None)
                conv.__dict__["_hvp_link"] = (seq, keys[idx], keys[idx + 1] if bn is not None else None,
                                              keys[idx + (2 if bn is not None else 1)] if act is not None
                                              else None)
                if bn is not None:
                    conv.__dict__["_hvp_bn"] = bn
                    _swap(bn, _subclass(bn.__dict__.get("_hvp_orig_class", type(bn)), "skip"))
                    report["dwconv+bn"] += 1
                if act is not None:
                    conv.__dict__["_hvp_act"] = (mod, act)
                    _swap(mod, _subclass(mod.__dict__.get("_hvp_orig_class", type(mod)), "skip"))
                    report["dwconv+act"] += 1
                done.add(id(conv))
                report["dwconv"] += 1
                report["modules"].append(names.get(id(conv), "?"))
        # 2. any other matching depthwise conv (no fusion)
        for m in model.modules():
            if id(m) not in done and (is_same_depthwise(m) or isinstance(m, TritonDWConv2d)):
                _swap(m, TritonDWConv2d)
                for key in ("_hvp_bn", "_hvp_act", "_hvp_link"):
                    m.__dict__.pop(key, None)
                done.add(id(m))
                report["dwconv"] += 1
                report["modules"].append(names.get(id(m), "?"))
    for m in model.modules():
        if id(m) in done:
            continue
        kind = "lkca" if (lkca and _is_lkca(m)) else "eca" if (eca and _is_eca(m)) else None
        if kind is None:
            if _orig_name(m) in ("LKCA", "ECA") and "_hvp_orig_class" not in m.__dict__:
                warnings.warn(f"accelerate: {type(m).__name__} at {names.get(id(m))!r} does not have the expected "
                              "attributes (see common/kernels/accelerate.py); left unchanged")
            continue
        if "_hvp_orig_class" in m.__dict__:  # already swapped by an earlier call
            report[kind] += 1
            continue
        if not _contract_holds(m, kind):
            warnings.warn(f"accelerate: {type(m).__name__} at {names.get(id(m))!r} does not compute what the "
                          f"reference op computes; left unchanged")
            continue
        _swap(m, _subclass(type(m), kind))
        done.add(id(m))
        report[kind] += 1
        report["modules"].append(names.get(id(m), "?"))
    total = report["dwconv"] + report["lkca"] + report["eca"]
    if total == 0:
        warnings.warn(f"accelerate: nothing to accelerate in {type(model).__name__} (no stride-1 'same' "
                      "depthwise Conv2d, no ECA, no LKCA module); the model is unchanged", RuntimeWarning)
    elif not torch.cuda.is_available() and not ops.interpret_requested():
        warnings.warn("accelerate: no CUDA GPU and TRITON_INTERPRET is not set, so the swapped modules run the "
                      "reference PyTorch ops (outputs unchanged, no speed-up). On a GPU the Triton kernels run; "
                      "TRITON_INTERPRET=1 (set before Triton is imported) runs them on CPU, slowly, for testing.",
                      RuntimeWarning)
    if verbose:
        print(f"accelerate({type(model).__name__}): {report['dwconv']} depthwise conv "
              f"({report['dwconv+bn']} with BN, {report['dwconv+act']} with activation), {report['lkca']} LKCA, "
              f"{report['eca']} ECA; backend: {report['backend']}")
    return report


def _orig_act_name(mod: nn.Module):
    """act_name of a module whose class was already swapped (use its original class)."""
    orig = mod.__dict__["_hvp_orig_class"]
    cls = mod.__class__
    try:
        mod.__class__ = orig
        return ref.act_name(mod)
    finally:
        mod.__class__ = cls


def restore(model: nn.Module) -> nn.Module:
    """Undo `accelerate`: every swapped module gets its original class back."""
    for m in model.modules():
        orig = m.__dict__.pop("_hvp_orig_class", None)
        if orig is not None:
            m.__class__ = orig
            for key in ("_hvp_bn", "_hvp_act", "_hvp_link"):
                m.__dict__.pop(key, None)
    return model

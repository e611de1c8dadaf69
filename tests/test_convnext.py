"""papers/convnext.py: parameter counts and MACs vs Table 1 (and vs formulas restated from the paper), key names
of the authors' checkpoints, logits equal to timm's after convert_timm, the two LayerNorm paths and the two
block layouts equal (outputs and gradients), stochastic depth, gradients, bad input, FX / export / compile."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from common.flops import count_macs, count_params
from papers import convnext as C
from papers.convnext import (CONFIGS, MODELS, PAPER_GFLOPS, PAPER_GFLOPS_384, PAPER_PARAMS, PARAMS, Block,
                             ConvNeXt, LayerNorm2d, convert_timm)

timm = pytest.importorskip("timm")
SMALL = ("convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano")
TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, img_size=32)


def meta_build(name, **kw):
    with torch.device("meta"):
        return MODELS[name](**kw)


def randomise(model, seed=0, std=0.1):
    """Random values everywhere, including LN affines and layer scale: with gamma at its 1e-6 init a block adds
    ~1e-6 to its input, so a wrong block would pass any output comparison. gamma ~ N(0.5, 0.2^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("weight"):                # LayerNorm scales (any naming)
                p.copy_(1.0 + std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", SMALL)
def test_small_variants_run(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=7, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    feats = model.forward_features(x)
    assert feats.shape == (2, CONFIGS[name][1][3], 2, 2)
    torch.testing.assert_close(model.forward_head(feats), y)
    stages = model.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [(2, d, 64 // 2 ** (i + 2), 64 // 2 ** (i + 2))
                                                 for i, d in enumerate(CONFIGS[name][1])]
    torch.testing.assert_close(stages[-1], feats)


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
                                  "convnext_xlarge"])
def test_big_variants_shapes_on_meta(name):
    model = meta_build(name)
    x = torch.empty(2, 3, 224, 224, device="meta")
    stages = model.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [(2, d, 56 // 2 ** i, 56 // 2 ** i)
                                                 for i, d in enumerate(CONFIGS[name][1])]
    assert model(x).shape == (2, 1000)


@pytest.mark.parametrize("size,final", [(32, 1), (40, 1), (50, 1), (63, 1), (64, 2), (100, 3), (96, 3)])
def test_any_size_from_32_works_and_floors(size, final):
    model = ConvNeXt(**TINY).eval()
    assert model.forward_features(torch.randn(1, 3, size, size)).shape == (1, 32, final, final)
    assert model(torch.randn(1, 3, size, size + 8)).shape == (1, 5)


# -------------------------------------------------------------------------------------- counts vs paper
def param_formula(depths, dims, num_classes=1000, in_chans=3, k=7):
    """§2-3 restated: stem 4x4 conv + LN; per block dwconv K*K*C + C, LN 2C, Linear C->4C and 4C->C with biases,
    gamma C; per downsampling LN 2C_i + 2x2 conv; final LN 2C_4 + Linear head."""
    n = 16 * in_chans * dims[0] + dims[0] + 2 * dims[0]
    for i, (d, c) in enumerate(zip(depths, dims)):
        n += d * ((k * k * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c) + c)
        if i < 3:
            n += 2 * c + 4 * c * dims[i + 1] + dims[i + 1]
    return n + 2 * dims[3] + dims[3] * num_classes + num_classes


def mac_formula(depths, dims, size=224, num_classes=1000, in_chans=3, k=7):
    """MACs of every conv and Linear: stem 16*3*C1 per output pixel; per block K*K*C (depthwise) + 8*C^2 (the two
    1x1 layers) per pixel; per downsampling 4*C_i*C_{i+1} per output pixel; head C4*classes."""
    s = size // 4
    n = s * s * 16 * in_chans * dims[0]
    for i, (d, c) in enumerate(zip(depths, dims)):
        n += d * s * s * (k * k * c + 8 * c * c)
        if i < 3:
            s //= 2
            n += s * s * 4 * c * dims[i + 1]
    return n + dims[3] * num_classes


@pytest.mark.params
@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_exact(name):
    model = meta_build(name)
    ours = count_params(model)
    assert ours == PARAMS[name] == param_formula(*CONFIGS[name]), (name, ours)
    with torch.device("meta"):
        theirs = count_params(timm.create_model(name, pretrained=False))
    assert ours == theirs, f"{name}: ours {ours:,} vs timm {theirs:,}"
    if name in PAPER_PARAMS:
        # Table 1 prints whole millions; it rounds T's 28.59M down to 28M (README's 22K table: 29M).
        assert abs(ours - PAPER_PARAMS[name]) < 0.6e6, (name, ours, PAPER_PARAMS[name])
        if name != "convnext_tiny":
            assert round(ours / 1e6) * 1e6 == PAPER_PARAMS[name]


@pytest.mark.params
@pytest.mark.parametrize("name", sorted(MODELS))
def test_macs_match_formula_and_paper(name):
    model = meta_build(name)
    r = count_macs(model, 224)
    assert r["total"] == r["layers"] == mac_formula(*CONFIGS[name]), (name, r["total"])
    if name in PAPER_GFLOPS:
        assert round(r["total"] / 1e9, 1) == PAPER_GFLOPS[name], (name, r["total"] / 1e9)
        r384 = count_macs(model, 384)["total"]
        assert r384 == mac_formula(*CONFIGS[name], size=384)
        if name == "convnext_base":   # 45.12 vs Table 1's 45.0 (the README's 22K table prints 47.0)
            assert abs(r384 / 1e9 - PAPER_GFLOPS_384[name]) / PAPER_GFLOPS_384[name] < 0.003
        else:
            assert round(r384 / 1e9, 1) == PAPER_GFLOPS_384[name], (name, r384 / 1e9)


# --------------------------------------------------------------------------------- checkpoint key names
def test_state_dict_keys_are_the_authors():
    """Key names from the authors' models/convnext.py; timm's own official->timm filter accepts them (strict)."""
    model = MODELS["convnext_atto"]()
    sd = model.state_dict()
    depths, dims = CONFIGS["convnext_atto"]
    expected = ["downsample_layers.0.0.weight", "downsample_layers.0.0.bias", "downsample_layers.0.1.weight",
                "downsample_layers.0.1.bias"]
    for i in range(1, 4):
        expected += [f"downsample_layers.{i}.{a}.{b}" for a in (0, 1) for b in ("weight", "bias")]
    for i in range(4):
        for j in range(depths[i]):
            expected += [f"stages.{i}.{j}.{n}" for n in ("gamma", "dwconv.weight", "dwconv.bias", "norm.weight",
                         "norm.bias", "pwconv1.weight", "pwconv1.bias", "pwconv2.weight", "pwconv2.bias")]
    expected += ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert sorted(sd) == sorted(expected)
    assert sd["stages.0.0.dwconv.weight"].shape == (40, 1, 7, 7)
    assert sd["stages.0.0.pwconv1.weight"].shape == (160, 40)        # nn.Linear, as in the checkpoints
    assert sd["downsample_layers.1.1.weight"].shape == (80, 40, 2, 2)
    from timm.models.convnext import checkpoint_filter_fn
    tm = timm.create_model("convnext_atto", pretrained=False)
    tm.load_state_dict(checkpoint_filter_fn({"model": sd}, tm), strict=True)
    # Without layer scale (layer_scale_init_value=0) there is no gamma, as in the authors' code.
    assert not any(k.endswith("gamma") for k in ConvNeXt(**TINY, layer_scale_init_value=0).state_dict())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_convert_timm_keys_and_shapes_every_variant(name):
    with torch.device("meta"):
        tm = timm.create_model(name, pretrained=False)
    converted = convert_timm(tm.state_dict())
    ours = meta_build(name).state_dict()
    assert sorted(converted) == sorted(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_convert_timm_rejects_unknown_keys():
    sd = timm.create_model("convnext_atto", pretrained=False).state_dict()
    sd["head.pre_logits.fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="head.pre_logits"):
        convert_timm(sd)


def _timm_pair(name, seed=0):
    tm = randomise(timm.create_model(name, pretrained=False), seed).eval()
    ours = MODELS[name]().eval()
    ours.load_state_dict(convert_timm(tm.state_dict()), strict=True)
    return ours, tm


@pytest.mark.equiv
@pytest.mark.parametrize("name,size", [("convnext_atto", 224), ("convnext_femto", 64), ("convnext_pico", 64),
                                       ("convnext_nano", 64), ("convnext_tiny", 64), ("convnext_small", 32),
                                       ("convnext_base", 32)])
def test_logits_equal_timm(name, size):
    """timm's model with random weights (no download) -> convert_timm -> our model: same logits in float32."""
    ours, tm = _timm_pair(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), tm(x)
    diff = (a - b).abs().max().item()
    print(f"{name} @ {size}px: max |ours - timm| = {diff:.2e} (logit scale {b.abs().max().item():.2f})")
    assert diff < 1e-4
    assert b.std() > 0.1      # the comparison is not between two near-constant outputs
    with torch.no_grad():     # and the blocks matter: zeroing one gamma changes the logits
        ours.stages[2][0].gamma.zero_()
        assert (ours(x) - b).abs().max() > 1e-3


# --------------------------------------------------------------------------------------- equivalences
@pytest.mark.equiv
def test_layer_norm_paths_agree_outputs_and_gradients():
    torch.manual_seed(0)
    ln = randomise(LayerNorm2d(6)).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64) * 3 + 1
    res = {}
    for fused in (True, False):
        ln.fused = fused
        ln.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = ln(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        res[fused] = (y.detach(), xi.grad, ln.weight.grad.clone(), ln.bias.grad.clone())
    for a, b in zip(res[True], res[False]):
        torch.testing.assert_close(a, b)
    # And both are "normalise every pixel over its channels", restated independently.
    xp = x.permute(0, 2, 3, 1)
    ref = (xp - xp.mean(-1, keepdim=True)) / (xp.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(res[True][0], (ref * ln.weight + ln.bias).permute(0, 3, 1, 2))


@pytest.mark.equiv
def test_block_layouts_and_norm_paths_agree_on_a_whole_model():
    torch.manual_seed(0)
    model = randomise(ConvNeXt(**TINY)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    res = {}
    for layout, fused in [("channels_last", True), ("channels_first", True), ("channels_first", False)]:
        model.set_layout(layout).set_fused_norm(fused)
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        res[layout, fused] = (y.detach(), xi.grad, {n: p.grad.clone() for n, p in model.named_parameters()})
    ref = res["channels_last", True]
    for key in [("channels_first", True), ("channels_first", False)]:
        torch.testing.assert_close(res[key][0], ref[0])
        torch.testing.assert_close(res[key][1], ref[1])
        for n in ref[2]:
            torch.testing.assert_close(res[key][2][n], ref[2][n], msg=f"{key}: grad of {n}")


@pytest.mark.equiv
def test_block_is_the_papers_formula():
    """Fig. 4 restated with explicit per-pixel sums: x + gamma * W2 GELU(W1 LN(dwconv(x)) + b1) + b2."""
    torch.manual_seed(0)
    blk = randomise(Block(6)).double().eval()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    w = blk.dwconv.weight[:, 0]                                          # (C, 7, 7)
    xp = F.pad(x, (3, 3, 3, 3))
    dw = torch.zeros_like(x)
    for a in range(7):
        for b in range(7):
            dw += w[:, a, b, None, None] * xp[:, :, a:a + 9, b:b + 9]   # cross-correlation, zero padding 3
    dw += blk.dwconv.bias[:, None, None]
    mu = dw.mean(1, keepdim=True)
    var = ((dw - mu) ** 2).mean(1, keepdim=True)
    ln = (dw - mu) / torch.sqrt(var + 1e-6) * blk.norm.weight[:, None, None] + blk.norm.bias[:, None, None]
    h = torch.einsum("oc,bchw->bohw", blk.pwconv1.weight, ln) + blk.pwconv1.bias[:, None, None]
    h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))                          # exact GELU
    y = torch.einsum("oc,bchw->bohw", blk.pwconv2.weight, h) + blk.pwconv2.bias[:, None, None]
    ref = x + blk.gamma[:, None, None] * y
    for layout in ("channels_last", "channels_first"):
        blk.layout = layout
        torch.testing.assert_close(blk(x), ref)


# ---------------------------------------------------------------------------------- training behaviour
def test_init_layer_scale_head_scale_and_drop_path_schedule():
    model = ConvNeXt(**TINY, drop_path_rate=0.3, head_init_scale=0.0)
    gammas = [m.gamma for m in model.modules() if isinstance(m, Block)]
    assert all(torch.equal(g, torch.full_like(g, 1e-6)) for g in gammas)
    assert model.head.weight.abs().max() == 0 and model.head.bias.abs().max() == 0
    rates = [m.drop_path.p for m in model.modules() if isinstance(m, Block)]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 5), rtol=0, atol=1e-7)
    w = ConvNeXt(**TINY).stages[0][0].pwconv1.weight
    assert abs(w.std().item() - 0.02) < 0.006 and w.abs().max() < 0.1   # trunc. normal std 0.02


def test_drop_path_drops_whole_samples_in_training_only():
    dp = C.DropPath(0.5)
    x = torch.ones(64, 3, 4, 4)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample.std(1) == 0).all()                          # one decision per sample
    assert 5 < (per_sample[:, 0] == 0).sum() < 59                  # some dropped, some kept
    assert torch.equal(dp.eval()(x), x)
    assert torch.equal(C.DropPath(0.0).train()(x), x)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ConvNeXt(**TINY, drop_path_rate=0.1).train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_dwconv_is_a_plain_depthwise_conv():
    """common.kernels.accelerate matches depthwise convs by structure: an exact nn.Conv2d, groups = channels,
    stride 1, odd kernel, 'same' zero padding."""
    for k in (3, 7, 11):
        conv = Block(16, kernel_size=k).dwconv
        assert type(conv) is torch.nn.Conv2d and conv.groups == conv.in_channels == conv.out_channels == 16
        assert conv.kernel_size == (k, k) and conv.stride == (1, 1) and conv.padding == (k // 2, k // 2)
        assert conv.padding_mode == "zeros" and conv.dilation == (1, 1)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("x,exc,match", [
    (torch.randn(3, 32, 32), ValueError, "unsqueeze"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "255"),
    (torch.randn(1, 1, 32, 32), ValueError, "3 colour channels"),
    (torch.randn(1, 3, 16, 64), ValueError, "at least 32x32"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_input_errors(x, exc, match):
    model = ConvNeXt(**TINY)
    with pytest.raises(exc, match=match):
        model(x)


def test_bad_configs():
    with pytest.raises(ValueError, match="4 stages"):
        ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 24))
    with pytest.raises(ValueError, match="odd"):
        Block(8, kernel_size=4)
    with pytest.raises(ValueError, match="layout"):
        Block(8, layout="nhwc")


def test_file_works_copied_alone(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copy(os.path.join(root, "papers", "convnext.py"), tmp_path / "convnext.py")
    code = ("import torch, convnext; m = convnext.MODELS['convnext_atto'](num_classes=10); "
            "print(tuple(m(torch.randn(2, 3, 32, 32)).shape))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 10)"


# ------------------------------------------------------------------------------------------- ecosystem
@pytest.mark.compile
@pytest.mark.parametrize("train", [False, True])
def test_create_feature_extractor_matches_hooks(train):
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = randomise(MODELS["convnext_atto"](num_classes=5, depths=(1, 1, 2, 1), drop_path_rate=0.2))
    model.train(train)
    # (A block that ends its stage, e.g. stages.2.1, cannot be asked for together with its stage: torchvision
    # then resolves both names to different nodes. stages.2.0 is a block in the middle.)
    nodes = {f"stages.{i}": f"s{i}" for i in range(4)} | {"stages.2.0": "block"}
    fx = create_feature_extractor(model, return_nodes=nodes)
    seen = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(nodes[n], o)) for n in nodes]
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    feats = fx(x)
    torch.manual_seed(1)
    model(x)
    for h in hooks:
        h.remove()
    assert set(feats) == set(seen)
    for k in seen:
        torch.testing.assert_close(feats[k], seen[k], msg=k)


@pytest.mark.compile
def test_torch_export_matches_eager():
    torch.manual_seed(0)
    model = randomise(MODELS["convnext_atto"](num_classes=5, depths=(1, 1, 2, 1))).eval()
    x = torch.randn(2, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))


@pytest.mark.compile
def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = randomise(MODELS["convnext_atto"](num_classes=5, depths=(1, 1, 2, 1))).eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))

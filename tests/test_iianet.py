"""Tests for papers/iianet.py: what the module docstring claims, checked against independent statements
(loops over the paper's formulas, a literal re-statement of the authors' code, hand-written ECA), and exact
parameter counts."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from papers import iianet as I
from papers.iianet import (MODELS, PAPER_PARAMS, IIANet, GlobalMHSA, ECA, DenseChannelGate, eca_kernel_size,
                           attention_maps)

SMALL = dict(img_size=64, width_mult=0.25, num_classes=10)   # stage maps 14/7/4/2, ~1.6M parameters
# One iiABlock per stage, 32 px, no stem pool (13x13 stage-1 map): for the tracing/compile tests.
TINY = dict(img_size=32, widths=((32,), (64,), (128,), (128,)), stem_widths=(16, 32), stem_pool=False,
            num_classes=5)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def set_attn_impl(model, impl):
    for m in model.modules():
        if isinstance(m, GlobalMHSA):
            m.attn_impl = impl
    return model


# ------------------------------------------------------------------------------- independent oracles
def qkv_by_hand(att, x):
    """q, k, v as (B, h, d, N) from the 1x1 conv's weights: channel h*d + e of q/k/v is head h, entry e."""
    c = x.shape[1]
    w = att.qkv.weight[:, :, 0, 0]                          # (3C, C)
    b = att.qkv.bias
    xf = x.flatten(2)                                        # (B, C, N)
    out = []
    for t in range(3):                                       # q, k, v: rows t*C ... t*C + C - 1
        y = torch.einsum("oc,bcn->bon", w[t * c:(t + 1) * c], xf) + b[t * c:(t + 1) * c, None]
        out.append(y.reshape(x.shape[0], att.heads, att.d, -1))   # (B, h, d, N)
    return out


def mhsa_oracle(att, x, position_term):
    """The attention written with loops over query i, key j: Eq. 3 ("paper": q_i.k_j + q_i.r_j) or the code's
    logits ("code": q_i.k_j + r_i.q_j), scaled by 1/sqrt(d), softmax over the N pixels then the R slots,
    out_i = sum_j a_ij v_j + sum_s a_is slot_v_s, plus the inner residual. Returns (out, attention)."""
    B, C, H, W = x.shape
    q, k, v = qkv_by_hand(att, x)
    N, h, d = H * W, att.heads, att.d
    R = att.num_slots
    # r_j for pixel j = (row y, column x): rel_h[y] + rel_w[x], read element by element.
    r = torch.zeros(h, d, N, dtype=x.dtype)
    for y in range(H):
        for xx in range(W):
            r[:, :, y * W + xx] = att.rel_h[:, y, 0, :] + att.rel_w[:, 0, xx, :]
    A = torch.zeros(B, h, N, N + R, dtype=x.dtype)
    out = torch.zeros(B, h, d, N, dtype=x.dtype)
    for hh in range(h):
        for i in range(N):
            logits = []
            for j in range(N):
                pos = (q[:, hh, :, i] * r[hh, :, j]).sum(-1) if position_term == "paper" \
                    else (r[hh, :, i] * q[:, hh, :, j]).sum(-1)
                logits.append((q[:, hh, :, i] * k[:, hh, :, j]).sum(-1) + pos)
            for s in range(R):
                logits.append((q[:, hh, :, i] * att.slot_k[hh, s]).sum(-1))
            a = torch.softmax(torch.stack(logits, -1) / math.sqrt(d), -1)      # (B, N + R)
            A[:, hh, i] = a
            vals = [v[:, hh, :, j] for j in range(N)] + [att.slot_v[hh, s].expand(B, d) for s in range(R)]
            out[:, hh, :, i] = sum(a[:, j, None] * vals[j] for j in range(N + R))
    return out.reshape(B, C, H, W) + x, A


def code_mhsa_literal(att, x):
    """The authors' MHSA forward (iiANET.py, class MHSA, from a BoTNet port), re-stated line by line with our
    parameters, minus its register head (which it drops) and plus our one documented change, the 1/sqrt(d)."""
    n_batch, C, width, height = x.size()                     # the code's names: width = rows, height = columns
    head = att.heads
    Wq, Wk, Wv = att.qkv.weight.split(C, 0)
    bq, bk, bv = att.qkv.bias.split(C, 0)
    q = F.conv2d(x, Wq, bq).view(n_batch, head, C // head, -1)
    k = F.conv2d(x, Wk, bk).view(n_batch, head, C // head, -1)
    v = F.conv2d(x, Wv, bv).view(n_batch, head, C // head, -1)
    content_content = torch.matmul(q.permute(0, 1, 3, 2), k)
    # The code's rel_h is [1, head, d, 1, height] (one per column), rel_w is [1, head, d, width, 1] (one per row).
    code_rel_h = att.rel_w.permute(0, 3, 1, 2).unsqueeze(0)  # ours (h, 1, W, d) -> (1, h, d, 1, W)
    code_rel_w = att.rel_h.permute(0, 3, 1, 2).unsqueeze(0)  # ours (h, H, 1, d) -> (1, h, d, H, 1)
    content_position = (code_rel_h + code_rel_w).view(1, head, C // head, -1).permute(0, 1, 3, 2)
    content_position = torch.matmul(content_position, q)
    energy = content_content + content_position
    attention = torch.softmax(energy / math.sqrt(C // head), dim=-1)
    out = torch.matmul(v, attention.permute(0, 1, 3, 2))
    out = out.view(n_batch, C, width, height)
    out += x
    return out


def small_mhsa(position_term="paper", slots=0, size=(3, 4), dim=8, heads=2):
    torch.manual_seed(0)
    att = GlobalMHSA(dim, heads=heads, size=size, num_slots=slots, position_term=position_term).double()
    with torch.no_grad():                                    # make the position and slot terms matter
        att.rel_h.normal_(0, 1.0)
        att.rel_w.normal_(0, 1.0)
        if slots:
            att.slot_k.normal_(0, 1.0)
            att.slot_v.normal_(0, 1.0)
    return att


# ---------------------------------------------------------------------------------------------- ECA
def test_eca_kernel_size_known_widths():
    # ECA-Net's formula with gamma=2, b=1 (nearest odd, ties up); spec: 64 -> 3, 128..1024 -> 5, 2048 -> 7.
    known = {8: 3, 16: 3, 32: 3, 64: 3, 128: 5, 160: 5, 192: 5, 256: 5, 320: 5, 512: 5, 768: 5, 1024: 5,
             1280: 5, 2048: 7, 4096: 7, 8192: 7, 16384: 7, 32768: 9}
    for c, k in known.items():
        assert eca_kernel_size(c) == k, c
    # Identical to timm's rule (int, bump to odd, min 3) wherever timm's clamp does not act (C >= 8).
    for c in range(8, 5000):
        t = int(abs(math.log2(c) + 1) / 2)
        assert eca_kernel_size(c) == max(t if t % 2 else t + 1, 3), c
    assert eca_kernel_size(4) == 1          # the paper's formula below 8 channels (timm would clamp to 3)
    assert eca_kernel_size(256, gamma=1, b=0) == 9
    with pytest.raises(ValueError):
        eca_kernel_size(0)


def test_eca_module_is_eca_net():
    torch.manual_seed(0)
    eca = ECA(192)
    assert eca.k == 5 and n_params(eca) == 5 and eca.conv.padding == (2,) and eca.conv.bias is None
    x = torch.randn(2, 192, 5, 5)
    y = eca(x)
    # By hand: pooled vector, 1-D cross-correlation with zero padding over the channel axis, sigmoid.
    p = x.mean((2, 3))
    w = eca.conv.weight.view(-1)
    pp = torch.nn.functional.pad(p, (2, 2))
    z = torch.stack([(pp[:, i:i + 5] * w).sum(1) for i in range(192)], 1)
    torch.testing.assert_close(y, x * torch.sigmoid(z)[:, :, None, None])
    # One ECA after every stage, the adaptive k everywhere (5 for all iiANET stage widths).
    with torch.device("meta"):
        m = MODELS["iianet"](num_classes=30)
    assert [e.k for e in m.ecas] == [5, 5, 5, 5]


def test_dense_gate_is_the_papers_1x1_conv_on_p():
    """§3.2: "a 1x1 convolution is performed on p (1 x 1 x C), then a sigmoid, then x * Z" (= the code)."""
    torch.manual_seed(0)
    g = DenseChannelGate(6)
    x = torch.randn(2, 6, 3, 5)
    p = x.mean((2, 3))                                       # (B, C)
    Wd = g.conv.weight[:, :, 0, 0]                           # (C_out, C_in)
    z = torch.sigmoid(torch.stack([(Wd[o] * p).sum(1) for o in range(6)], 1))
    torch.testing.assert_close(g(x), x * z[:, :, None, None])
    assert n_params(g) == 36
    with torch.device("meta"):
        m = IIANet(eca="dense")
    assert all(type(e) is DenseChannelGate and type(e).__name__ != "ECA" for e in m.ecas)
    assert n_params(m) == 27_679_182                         # docstring: 25,311,714 - 20 + sum C^2


def test_accelerate_matches_the_1d_eca_only():
    """common/kernels matches a class named ECA with a Conv1d(1, 1, k): the 1-D ECA must match, the dense gate
    must not be mistaken for it; the MBConv depthwise conv + BN + ReLU chains stay fusable."""
    from common.kernels import accelerate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r1 = accelerate(IIANet(**SMALL))
        r2 = accelerate(IIANet(eca="dense", **SMALL))
    assert (r1["eca"], r1["dwconv"], r1["dwconv+bn"], r1["dwconv+act"]) == (4, 12, 12, 12)
    assert (r2["eca"], r2["dwconv"], r2["dwconv+bn"], r2["dwconv+act"]) == (0, 12, 12, 12)


# --------------------------------------------------------------------------------------- structure
# Exact counts at 299 px / 30 classes (the paper gives only the full model's 25.2M; Tables 4-6 give none).
EXACT = {"iianet": 25_311_714, "iianet_a_mbconv": 42_508_882, "iianet_b_mbconv_dilated": 33_429_202,
         "iianet_c_full": 25_311_714, "iianet_d_dilated_mhsa": 16_094_226, "iianet_e_mbconv_mhsa": 33_099_426,
         "iianet_ratio242": 15_176_882, "iianet_heads16": 25_311_714, "iianet_reg1": 25_313_090,
         "iianet_reg2": 25_314_466, "iianet_reg4": 25_317_218}


@pytest.mark.params
def test_exact_parameter_counts_every_variant():
    assert set(EXACT) == set(MODELS)
    for name, f in MODELS.items():
        with torch.device("meta"):
            m = f(num_classes=30, img_size=299)
        assert n_params(m) == EXACT[name], name
    # Paper (Table 2): 25.2M; ours +0.44%.
    assert abs(EXACT["iianet"] / PAPER_PARAMS["iianet"] - 1 - 0.0044) < 5e-5
    # The slots cost 2 * R * c per block: 1,376 * R in all (sum of the 12 MHSA widths c is 688).
    for r in (1, 2, 4):
        assert EXACT[f"iianet_reg{r}"] == EXACT["iianet"] + 1376 * r


@pytest.mark.params
def test_parameter_breakdown_vs_the_code():
    """Docstring: the code without its dead registers has 25,307,814 at 30 classes; ours is 3,900 more:
    position tables +1,320 (28,448 at 73/37/19/10 vs 27,128 at the code's 73/36/18/9), BN of the three 1x1/2
    downsampling convs +2,560, ECA 20 weights; the downsampling convs' C^2 replaces the code's dense "ECA"."""
    with torch.device("meta"):
        m = MODELS["iianet"](num_classes=30, img_size=299)
    pos = sum(p.numel() for n, p in m.named_parameters() if n.endswith(("rel_h", "rel_w")))
    assert pos == 28_448
    cs = [[8, 20], [24, 32, 36], [40, 56, 80, 80, 88], [96, 128]]     # MHSA widths per block (code)
    assert sum(2 * c * s for cc, s in zip(cs, (73, 36, 18, 9)) for c in cc) == 27_128
    assert sum(2 * c * s for cc, s in zip(cs, (73, 37, 19, 10)) for c in cc) == 28_448
    ds = {n: p.numel() for n, p in m.named_parameters() if n.startswith("downsample.")}   # downsample.i.{0,1}.*
    ds_bn = sum(v for n, v in ds.items() if n.split(".")[2] == "1")
    assert ds_bn == 2 * (192 + 320 + 768) == 2_560
    assert sum(p.numel() for p in m.ecas.parameters()) == 20
    ds_conv = sum(v for n, v in ds.items() if n.split(".")[2] == "0")
    assert ds_conv == 192 ** 2 + 320 ** 2 + 768 ** 2 == 729_088
    assert EXACT["iianet"] - 25_307_814 == 1_320 + 2_560 + 20


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_norm_keeps_its_affine_parameters(name):
    """Every BatchNorm/LayerNorm has its learnable weight and bias (a norm without them would still run)."""
    m = MODELS[name](**SMALL)
    norms = [(n, mod) for n, mod in m.named_modules()
             if isinstance(mod, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm))]
    assert norms
    params = dict(m.named_parameters())
    for n, mod in norms:
        for p in ("weight", "bias"):
            assert f"{n}.{p}" in params and params[f"{n}.{p}"].requires_grad, f"{n} lost its affine {p}"
    # Three 1x1 conv+BN per branch wrapper at most, and so on: the count of BNs itself is pinned.
    expected_bns = {"iianet_a_mbconv": 12 * 4, "iianet_b_mbconv_dilated": 12 * 6,
                    "iianet_d_dilated_mhsa": 12 * 4, "iianet_e_mbconv_mhsa": 12 * 6}.get(name, 12 * 8)
    assert len(norms) == expected_bns + 2 + 3, (name, len(norms))    # + stem 2 + downsampling 3


def test_code_layout_widths_heads_and_sizes():
    with torch.device("meta"):
        m = MODELS["iianet"](num_classes=30)
        r242 = MODELS["iianet_ratio242"](num_classes=30)
        m2 = IIANet(img_size=(96, 128), width_mult=0.25)
    assert [len(s) for s in m.stages] == [2, 3, 5, 2] and m.heads == (1, 2, 4, 8)
    assert [s[-1].splits_in for s in m.stages][0] == (20, 120, 20)
    assert m.stage_sizes == ((73, 73), (37, 37), (19, 19), (10, 10))
    first = m.stages[0][0]
    assert first.splits_in == (8, 48, 8) and first.splits_out == (20, 120, 20)
    mhsa = first.branches["mhsa"].body.mhsa
    assert mhsa.rel_h.shape == (1, 73, 1, 8) and mhsa.rel_w.shape == (1, 1, 73, 8)
    assert first.branches["mbconv"].body.dw[0].groups == 480             # hidden = 4 x branch output
    assert isinstance(m.stem[-1], torch.nn.MaxPool2d)
    assert r242.stages[0][0].splits_in == (16, 32, 16) and r242.stages[0][0].splits_out == (40, 80, 40)
    # Position tables are sized from img_size.
    assert m2.stage_sizes[0] == (22, 30)
    assert m2.stages[0][0].branches["mhsa"].body.mhsa.rel_w.shape[2] == 30


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_variant_builds_and_runs_small(name):
    torch.manual_seed(0)
    m = MODELS[name](**SMALL)
    x = torch.randn(2, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (2, m.num_features, 2, 2)
    y = m(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_ablation_variants_have_the_right_branches():
    present = {"iianet": {"dilated", "mbconv", "mhsa"}, "iianet_c_full": {"dilated", "mbconv", "mhsa"},
               "iianet_a_mbconv": {"mbconv"}, "iianet_b_mbconv_dilated": {"dilated", "mbconv"},
               "iianet_d_dilated_mhsa": {"dilated", "mhsa"}, "iianet_e_mbconv_mhsa": {"mbconv", "mhsa"}}
    for name, branches in present.items():
        m = MODELS[name](**SMALL)
        for stage in m.stages:
            for block in stage:
                assert set(block.branches) == branches, name
        assert any(isinstance(mod, GlobalMHSA) for mod in m.modules()) == ("mhsa" in branches)


@pytest.mark.slow
def test_full_resolution_299_forward_and_macs():
    from common.flops import count_macs

    torch.manual_seed(0)
    m = MODELS["iianet"](num_classes=30, img_size=299)
    out = []
    m.register_forward_hook(lambda mod, inp, o: out.append(o))
    r = count_macs(m, 299)                                   # one batch-1 eval forward
    assert out[0].shape == (1, 30) and torch.isfinite(out[0]).all()
    # Docstring: 8.72 GMACs in Conv/Linear modules (paper: 8.22 G), 10.75 G in total on the SDPA path.
    assert abs(r["layers"] / 1e9 - 8.72) < 0.01, r["layers"]
    assert abs(r["total"] / 1e9 - 10.75) < 0.01, r["total"]
    assert abs(r["layers"] / 1e9 - I.PAPER_GFLOPS["iianet"]) / I.PAPER_GFLOPS["iianet"] < 0.07


# -------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("slots", [0, 2])
def test_every_parameter_gets_a_gradient(slots):
    torch.manual_seed(0)
    m = IIANet(num_registers=slots, drop_rate=0.0, **SMALL)
    m(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    if slots:
        names = {n for n, _ in m.named_parameters()}
        assert sum(n.endswith(("slot_k", "slot_v")) for n in names) == 2 * 12   # 12 blocks, k and v


# ------------------------------------------------------------------- the attention vs independent oracles
@pytest.mark.parametrize("position_term", ["paper", "code"])
@pytest.mark.parametrize("slots", [0, 2])
@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_mhsa_equals_the_loop_oracle(position_term, slots, impl):
    att = small_mhsa(position_term, slots)
    att.attn_impl = impl
    x = torch.randn(2, 8, 3, 4, dtype=torch.double)
    want, _ = mhsa_oracle(att, x, position_term)
    torch.testing.assert_close(att(x), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_code_position_term_is_the_authors_code(impl):
    """position_term="code" against the code's forward re-stated literally (non-square map: rows != columns)."""
    att = small_mhsa("code", size=(3, 5), dim=12, heads=3)
    att.attn_impl = impl
    x = torch.randn(2, 12, 3, 5, dtype=torch.double)
    with torch.no_grad():
        want = code_mhsa_literal(att, x)
        torch.testing.assert_close(att(x), want, rtol=1e-10, atol=1e-10)
        # ... and the paper's term gives a different output with the same weights (docstring, 4.).
        att.position_term = "paper"
        assert (att(x) - want).abs().max() > 1e-2


@pytest.mark.equiv
@pytest.mark.parametrize("position_term", ["paper", "code"])
@pytest.mark.parametrize("slots", [0, 3])
def test_sdpa_equals_naive_attention(slots, position_term):
    att = small_mhsa(position_term, slots, size=(5, 7), dim=16, heads=2)
    x = torch.randn(3, 16, 5, 7, dtype=torch.double, requires_grad=True)
    results = []
    for impl in ("sdpa", "naive"):
        att.attn_impl = impl
        att.zero_grad()
        x.grad = None
        y = att(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results.append((y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in att.named_parameters()}))
    (ys, gxs, gps), (yn, gxn, gpn) = results
    torch.testing.assert_close(ys, yn, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gxs, gxn, rtol=1e-10, atol=1e-10)
    for n in gps:
        torch.testing.assert_close(gps[n], gpn[n], rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.equiv
@pytest.mark.parametrize("position_term", ["paper", "code"])
def test_sdpa_equals_naive_whole_model(position_term):
    torch.manual_seed(0)
    m = IIANet(num_registers=1, position_term=position_term, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ys = set_attn_impl(m, "sdpa")(x)
        yn = set_attn_impl(m, "naive")(x)
    torch.testing.assert_close(ys, yn, rtol=1e-4, atol=1e-5)


def test_attention_maps_equal_the_oracle_and_flags_are_restored():
    torch.manual_seed(0)
    m = IIANet(num_registers=2, img_size=20, widths=((32,), (64,), (128,), (128,)), stem_widths=(16, 32),
               stem_pool=False, num_classes=4).double().eval()       # stage maps 7/4/2/1
    x = torch.randn(2, 3, 20, 20, dtype=torch.double)
    names = [n for n, mod in m.named_modules() if isinstance(mod, GlobalMHSA)]
    inputs = {}
    hooks = [m.get_submodule(n).register_forward_pre_hook(lambda mod, a, n=n: inputs.__setitem__(n, a[0]))
             for n in names]
    first = m.get_submodule(names[0])
    first.keep_attn = True                                  # a flag that was on stays on
    maps = attention_maps(m, x)
    for hk in hooks:
        hk.remove()
    assert list(maps) == names == ["stages.0.0.branches.mhsa.body.mhsa", "stages.1.0.branches.mhsa.body.mhsa",
                                   "stages.2.0.branches.mhsa.body.mhsa", "stages.3.0.branches.mhsa.body.mhsa"]
    for n in names:
        mod = m.get_submodule(n)
        _, want = mhsa_oracle(mod, inputs[n], "paper")
        N = mod.size[0] * mod.size[1]
        assert maps[n].shape == (2, mod.heads, N, N + 2)
        torch.testing.assert_close(maps[n], want, rtol=1e-10, atol=1e-10)
        assert "last_attn" not in mod.__dict__
        assert mod.keep_attn is (n == names[0])


def test_slots_change_the_output():
    """Unlike the authors' code (registers in a discarded head: zero effect), the slots act on the output."""
    torch.manual_seed(0)
    m = IIANet(num_registers=2, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y0 = m(x)
        for mod in m.modules():
            if isinstance(mod, GlobalMHSA):
                mod.slot_v.add_(1.0)
        y1 = m(x)
    assert (y0 - y1).abs().max() > 1e-3


# --------------------------------------------------------------------------- FX / export / compile
def _tiny(name):
    torch.manual_seed(0)
    return MODELS[name](**TINY).eval()


@pytest.mark.compile
@pytest.mark.parametrize("name", sorted(MODELS))
def test_create_feature_extractor_equals_hooks(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    m = _tiny(name)
    x = torch.randn(2, 3, 32, 32)
    nodes = ["stages.0", "stages.1", "stages.2", "stages.3", "ecas.3"]
    seen = {}
    hooks = [m.get_submodule(n).register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(n, o))
             for n in nodes]
    with torch.no_grad():
        m(x)
    for hk in hooks:
        hk.remove()
    fx = create_feature_extractor(m, return_nodes={n: n for n in nodes})
    with torch.no_grad():
        got = fx(x)
    for n in nodes:
        torch.testing.assert_close(got[n], seen[n], rtol=1e-5, atol=1e-6, msg=n)
    with pytest.raises(ValueError, match="built for 32x32"):   # the wrapped input check still runs
        fx(torch.randn(1, 3, 16, 16))


@pytest.mark.compile
@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_export_equals_eager(name):
    m = _tiny(name)
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-6)


@pytest.mark.compile
@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_compile_fullgraph_equals_eager(name):
    # Every variant once; the reg variants also take the code's position term and the dense gate (the options).
    kw = {"position_term": "code", "eca": "dense"} if "reg" in name else {}
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = MODELS[name](**kw, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    c = torch.compile(m, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    m = IIANet(**SMALL)
    with pytest.raises(ValueError, match="unsqueeze"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.randn(1, 1, 64, 64))
    with pytest.raises(TypeError, match=r"float\(\) / 255"):
        m(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"built for 64x64.*img_size=\(32, 32\)"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="built for 64x64"):
        m.forward_features(torch.randn(1, 3, 299, 299))
    with pytest.raises(TypeError):
        m([[1.0]])


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="ratio"):
        IIANet(ratio=(0, 0, 0), **SMALL)
    with pytest.raises(ValueError, match="ratio"):
        IIANet(ratio=(1, 6), **SMALL)
    with pytest.raises(ValueError, match="num_registers"):
        IIANet(num_registers=-1, **SMALL)
    with pytest.raises(ValueError, match="divisible by heads"):
        IIANet(img_size=64, heads=(3, 2, 4, 8))
    with pytest.raises(ValueError, match="split"):
        IIANet(img_size=64, ratio=(1, 5, 1))
    with pytest.raises(ValueError, match="too small"):
        IIANet(img_size=8)
    with pytest.raises(TypeError, match="img_size"):
        IIANet(img_size="299")
    with pytest.raises(ValueError, match="attn_impl"):
        IIANet(attn_impl="flash", **SMALL)
    with pytest.raises(ValueError, match="position_term"):
        IIANet(position_term="botnet", **SMALL)
    with pytest.raises(ValueError, match="eca"):
        IIANet(eca="se", **SMALL)

"""Token Fusion (papers/token_fusion.py): what the module and its docstring claim, checked.

Full-size models (~140M parameters) are built on the meta device only (no memory, no compute): parameter
counts and stage shapes. Everything that runs uses a small configuration of the same structure (64 x 64
inputs, 16 x 16 patches, so the stride relations between ResNet stages and the patch grid are those of
224 / 16). Paper numbers are restated here literally, never read back from the module.
"""
import socket
import urllib.request
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from papers import token_fusion as tf

TINY = dict(img_size=64, patch_size=16, embed_dim=32, num_heads=2, cnn_layers=(1, 1, 1, 1), cnn_width=8,
            num_classes=5)
# fewer blocks for the tracing/compiling tests (same modules, a quarter of the graph)
SHALLOW = {"token_fusion_late": dict(depth=2), "token_fusion_early": dict(depth=2),
           "token_fusion_layer": dict(blocks_per_mix=1, final_blocks=1)}
METHODS = ("token_fusion_late", "token_fusion_early", "token_fusion_layer")
COMBOS = [(m, h) for m in METHODS for h in ("token", "channel", "mixing")]

# Exact parameter counts of the nine full-size combinations (1000 classes, 224 x 224), pinned.
FULL_PARAMS = {
    ("token_fusion_late", "token"): 133_618_120, ("token_fusion_late", "channel"): 134_371_624,
    ("token_fusion_late", "mixing"): 135_157_192,
    ("token_fusion_early", "token"): 138_631_579, ("token_fusion_early", "channel"): 139_204_723,
    ("token_fusion_early", "mixing"): 139_401_115,
    ("token_fusion_layer", "token"): 139_757_392, ("token_fusion_layer", "channel"): 140_330_536,
    ("token_fusion_layer", "mixing"): 140_526_928,
}
# Table 1 of the paper (ImageNet-1K top-1, %), restated.
TABLE1 = {("late", "token"): 85.51, ("late", "channel"): 85.73, ("late", "mixing"): 86.29,
          ("early", "token"): 83.01, ("early", "channel"): 84.94, ("early", "mixing"): 85.27,
          ("layer", "token"): 86.97, ("layer", "channel"): 87.77, ("layer", "mixing"): 87.32}


def n_params(m, trainable=False):
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


def build_meta(name, **kw):
    with torch.device("meta"):
        return tf.MODELS[name](**kw)


def tiny(name, **kw):
    torch.manual_seed(0)
    return tf.MODELS[name](**{**TINY, **kw})


def token_head_blind(model):
    """Parameters that add one and the same vector to every token right before a token-wise head: the head's
    LayerNorm over the N token means removes any shift common to all tokens, so their gradient is zero in
    exact arithmetic (rounding leaves ~1e-9). See test_token_wise_head_ignores_a_shift_common_to_all_tokens."""
    if getattr(model.head, "kind", None) != "token":
        return set()
    if isinstance(model, tf.LateTokenFusion):
        blind = {f"cnn_encoder.{len(model.cnn_encoder) - 1}.mlp.2.bias"}
        if model.fusion.up is None:
            blind.add(f"vit_encoder.{len(model.vit_encoder) - 1}.mlp.2.bias")
        else:
            blind.add("fusion.up.bias")
        return blind
    return {f"encoder.{len(model.encoder) - 1}.mlp.2.bias"}


def assert_all_grads(model):
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"no (finite) gradient for {missing[:5]} ..."
    blind = token_head_blind(model)
    zero = [n for n, p in model.named_parameters()
            if p.requires_grad and p.grad.abs().sum() == 0 and n not in blind]
    assert not zero, f"all-zero gradient for {zero[:5]}"


# ------------------------------------------------------------------------------------------------------
# Shapes and gradients: every method x head (and the Table 4 variants)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,head", COMBOS)
def test_shapes_and_every_parameter_gets_a_gradient(name, head):
    m = tiny(name, head=head)
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    n_vit = (64 // 16) ** 2
    if name == "token_fusion_late":
        assert feats.shape == (2, 4 * n_vit, 2 * 32)   # UpConv x4 tokens, concat of two D-wide tokens
    else:
        assert feats.shape == (2, n_vit, 32)
    out = m.forward_head(feats)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, m(x))
    m(x).logsumexp(1).sum().backward()
    assert_all_grads(m)


@pytest.mark.parametrize("upsample", ["upconv", "copy"])
@pytest.mark.parametrize("combine", ["concat", "add"])
def test_late_table4_variants(upsample, combine):
    m = tiny("token_fusion_late", upsample=upsample, combine=combine, head="mixing")
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, 64, 64 if combine == "concat" else 32)
    if upsample == "copy" and combine == "concat":  # each ViT token copied to its 2 x 2 block
        grid = feats[..., :32].transpose(1, 2).reshape(2, 32, 8, 8)
        torch.testing.assert_close(grid[..., 0::2, 0::2], grid[..., 1::2, 1::2])
        torch.testing.assert_close(grid[..., 0::2, 0::2], grid[..., 0::2, 1::2])
    assert (m.fusion.up is None) == (upsample == "copy")
    m(x).sum().backward()
    assert_all_grads(m)


@pytest.mark.parametrize("upsample", ["upconv", "copy"])
@pytest.mark.parametrize("bridges", ["multi", "single"])
def test_early_table4_variants(upsample, bridges):
    m = tiny("token_fusion_early", upsample=upsample, bridges=bridges, head="token")
    x = torch.randn(2, 3, 64, 64)
    u = m.unified_map(x)
    assert u.shape == (2, 18 if bridges == "multi" else 6, 64, 64)  # "H x W x 18" = 3 + 5 x 3
    torch.testing.assert_close(u[:, :3], x)                        # the original image itself
    assert m(x).shape == (2, 5)
    m(x).sum().backward()
    assert_all_grads(m)


@pytest.mark.parametrize("head", ["token", "channel", "mixing"])
def test_layer_class_token_is_kept_out_of_the_mixing(head):
    m = tiny("token_fusion_layer", class_token=True, head=head)
    x = torch.randn(2, 3, 64, 64)
    seen = []
    for b in m.mixing:
        b.integrate.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    assert m.forward_features(x).shape == (2, 1 + 16, 32)
    assert seen == [(2, 16, 64)] * 5  # 16 patch tokens x [transformer, CNN], never the class token (Fig. 8)
    m(x).sum().backward()
    assert_all_grads(m)


def test_layer_mixing_concatenates_transformer_and_pooled_stage_tokens():
    """Mixing block 1's Linear sees [its transformer's output, conv1's map pooled 8 x 8 then 1x1-projected],
    recomputed here from the weights."""
    m = tiny("token_fusion_layer").double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    got, blk = {}, m.mixing[0]
    blk.integrate.register_forward_hook(lambda mod, inp, out: got.__setitem__("in", inp[0]))
    blk.blocks.register_forward_hook(lambda mod, inp, out: got.__setitem__("t", out))
    m(x)
    f0 = m.cnn.stages[0](x)                                                    # (1, 64, 32, 32)
    c = F.conv2d(F.avg_pool2d(f0, 8), blk.tokens.proj.weight, blk.tokens.proj.bias)  # (1, D, 4, 4)
    expected = torch.cat([got["t"], c.flatten(2).transpose(1, 2)], dim=2)      # (1, 16, 2D)
    torch.testing.assert_close(got["in"], expected)


# ------------------------------------------------------------------------------------------------------
# The head is alive at initialisation (the token-wise head once pooled after a per-token LayerNorm, which
# made its input the same number for every token and image)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("head", ["token", "mixing"])
def test_token_wise_head_is_alive_at_initialisation(name, head):
    m = tiny(name, head=head)
    torch.manual_seed(1)
    x = torch.randn(8, 3, 64, 64)
    feats = m.forward_features(x)
    token_means = feats.mean(dim=2)                                   # Fig. 5(a), computed here: (8, N)
    # the token-wise vectors differ between tokens and between images (not one number, not rank 1)
    assert token_means.std(dim=1).min() > 1e-4 * feats.abs().mean()
    sv = torch.linalg.svdvals(token_means - token_means.mean(0))
    assert sv[1] > 1e-2 * sv[0], f"token-wise vectors are (nearly) rank 1 across images: {sv[:3]}"
    y = m.forward_head(feats)
    assert (y - y.mean(0)).abs().max() > 1e-3, "logits are the same for every input"
    F.cross_entropy(y, torch.arange(8) % 5).backward()
    g = m.head.fc.weight.grad
    assert g.abs().max() > 1e-2, f"head gradient {g.abs().max():.1e}"
    if head == "mixing":  # the token-wise part of the mixing head gets its share of the gradient
        n = token_means.shape[1]
        assert g[:, :n].abs().max() > 1e-2


@pytest.mark.parametrize("name", METHODS)
def test_token_wise_head_ignores_a_shift_common_to_all_tokens(name):
    """Why token_head_blind exists: LN over the N token means is blind to a vector added to every token."""
    m = tiny(name, head="token").double()
    feats = m.forward_features(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    shift = torch.randn(feats.shape[-1], dtype=torch.float64)
    torch.testing.assert_close(m.forward_head(feats + shift), m.forward_head(feats))
    m.forward_head(feats).logsumexp(1).sum().backward()
    for n, p in m.named_parameters():
        if n in token_head_blind(m):
            assert p.grad.abs().max() < 1e-9, n


@pytest.mark.parametrize("name", METHODS)
def test_every_norm_keeps_its_affine_parameters_and_they_train(name):
    m = tiny(name, head="mixing").train()
    m(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    norms = [(n, mod) for n, mod in m.named_modules()
             if isinstance(mod, (nn.LayerNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    assert sum(isinstance(mod, nn.LayerNorm) for _, mod in norms) == 2 * 12 + 1  # 12 blocks + the head
    assert any(isinstance(mod, nn.BatchNorm2d) for _, mod in norms)
    for n, mod in norms:
        assert isinstance(mod.weight, nn.Parameter) and isinstance(mod.bias, nn.Parameter), f"{n}: no affine"
        assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0, f"{n}.weight gets no gradient"
        assert mod.bias.grad is not None and mod.bias.grad.abs().sum() > 0, f"{n}.bias gets no gradient"


# ------------------------------------------------------------------------------------------------------
# Structure promised by the paper
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_twelve_transformer_blocks_and_no_class_token(name):
    m = build_meta(name)
    assert sum(isinstance(b, tf.Block) for b in m.modules()) == 12  # "all three models ... 12 blocks"
    assert not any("cls" in n for n, _ in m.named_parameters())       # "We do not use a class token"


def test_default_heads_are_table1_best():
    best = {}
    for (method, head), acc in TABLE1.items():
        if acc > best.get(method, ("", -1.0))[1]:
            best[method] = (head, acc)
    assert {k: v[0] for k, v in best.items()} == {"late": "mixing", "early": "mixing", "layer": "channel"}
    assert {n: build_meta(n).head.kind for n in METHODS} == {f"token_fusion_{k}": v[0] for k, v in best.items()}


def test_layer_model_stages_at_full_size():
    """Shapes propagated on the meta device: ResNet-101's five stages (64..2048 channels, strides 2..32),
    each turned into 14 x 14 tokens of width 768."""
    m = build_meta("token_fusion_layer")
    assert len(m.mixing) == 5 and all(len(b.blocks) == 2 for b in m.mixing) and len(m.encoder) == 2
    f = torch.empty(1, 3, 224, 224, device="meta")
    for stage, mix, (c, s) in zip(m.cnn.stages, m.mixing, [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)]):
        f = stage(f)
        assert f.shape == (1, c, 224 // s, 224 // s)
        assert mix.tokens(f).shape == (1, 196, 768)
    assert m(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


def test_late_model_dilated_trunk_and_upconv_x4_at_full_size():
    m = build_meta("token_fusion_late")
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert m.cnn(x)[-1].shape == (1, 2048, 28, 28)           # stride 8: 784 CNN tokens
    assert m.patch_embed(x).shape == (1, 196, 768)           # 14 x 14 ViT tokens, "expanded four times"
    assert m.forward_features(x).shape == (1, 784, 1536)


def test_thin_trunk_keeps_the_structure():
    m = tiny("token_fusion_layer", cnn_base=16, img_size=32, patch_size=8)
    x = torch.randn(2, 3, 32, 32)
    assert [tuple(f.shape[1:]) for f in m.cnn(x)] == [(16, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2),
                                                      (512, 1, 1)]
    late = tiny("token_fusion_late", cnn_base=16, img_size=32, patch_size=8)
    assert late.cnn(x)[-1].shape == (2, 512, 8, 8)  # patch 8: CNN tokens at stride 4 (layer2-4 dilated)
    assert m(x).shape == late(x).shape == (2, 5)
    assert late.forward_features(x).shape == (2, 64, 64)


# ------------------------------------------------------------------------------------------------------
# Parameter counts (full size, meta device)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.params
@pytest.mark.parametrize("name,head", COMBOS)
def test_full_size_parameter_counts(name, head):
    n = n_params(build_meta(name, head=head))
    assert n == FULL_PARAMS[(name, head)]
    # "all models were configured to have a similar size": every combination within 5% of the paper's 140M
    assert abs(n - 140e6) / 140e6 < 0.05


@pytest.mark.params
def test_paper_140m_for_the_best_model():
    n = n_params(build_meta("token_fusion_layer"))  # default head: channel-wise (Tables 2-3's "Ours")
    assert abs(n - 140e6) / 140e6 < 0.005           # 140.33M vs 140M: fitted by construction (docstring)


@pytest.mark.params
@pytest.mark.parametrize("head", ["token", "channel", "mixing"])
def test_layer_model_count_from_its_parts(head):
    """The layer model's count restated from the architecture, with torchvision's ResNet-101 as the oracle
    for the trunk."""
    with torch.device("meta"):
        r101 = torchvision.models.resnet101(weights=None)
    trunk = n_params(r101) - n_params(r101.fc)
    D, N, K, C = 768, 196, 1000, [64, 256, 512, 1024, 2048]
    block = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    patch = 3 * 16 * 16 * D + D
    pos = N * D
    proj = sum(c * D + D for c in C)                 # five 1x1 convs, each pixel a token
    up = D * D * 2 * 2 + D                           # one UpConv x2 for conv5_x
    integrate = 5 * (2 * D * D + D)                  # five Linear 2D -> D
    f = {"token": N, "channel": D, "mixing": N + D}[head]
    head_params = 2 * f + f * K + K                  # LayerNorm(f) + Linear(f, K)
    total = trunk + 12 * block + patch + pos + proj + up + integrate + head_params
    assert (trunk, block) == (42_500_160, 7_087_872)
    assert n_params(build_meta("token_fusion_layer", head=head)) == total


# ------------------------------------------------------------------------------------------------------
# Equivalent formulations (outputs and gradients)
# ------------------------------------------------------------------------------------------------------
def _outputs_and_grads(m, x):
    m.zero_grad()
    y = m(x)
    y.pow(2).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.equiv
@pytest.mark.parametrize("name", METHODS)
def test_naive_paths_equal_fast_paths(name):
    """Attention (softmax vs SDPA) and, for early fusion, the copy bridges' order: all at once."""
    m = tiny(name, **({"upsample": "copy"} if name == "token_fusion_early" else {})).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y_fast, g_fast = _outputs_and_grads(m.set_naive(False), x)
    y_naive, g_naive = _outputs_and_grads(m.set_naive(True), x)
    assert any(isinstance(a, tf.Attention) and a.naive for a in m.modules())
    torch.testing.assert_close(y_fast, y_naive)
    assert g_fast.keys() == g_naive.keys()
    for k in g_fast:
        torch.testing.assert_close(g_fast[k], g_naive[k], msg=k)


@pytest.mark.equiv
def test_copy_bridge_paper_order_equals_fast_order():
    """Copy then 1x1 (the paper's order) == 1x1 then copy (a 1x1 conv acts on each pixel alone)."""
    torch.manual_seed(0)
    b = tf.BridgeBlock(64, factor=8, upsample="copy").double()
    f1 = torch.randn(2, 64, 4, 4, dtype=torch.float64, requires_grad=True)
    f2 = f1.detach().clone().requires_grad_(True)
    b.naive = True
    y1 = b(f1)
    y1.pow(2).sum().backward()
    g1 = [p.grad.clone() for p in b.parameters()]
    b.zero_grad()
    b.naive = False
    y2 = b(f2)
    y2.pow(2).sum().backward()
    assert y1.shape == (2, 3, 32, 32)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(f1.grad, f2.grad)
    for a, c in zip(g1, b.parameters()):
        torch.testing.assert_close(a, c.grad)


@pytest.mark.equiv
def test_stage_tokens_pool_before_projection_equals_after():
    torch.manual_seed(0)
    st = tf.StageTokens(256, 32, stride=4, patch_size=16).double()
    f = torch.randn(2, 256, 16, 16, dtype=torch.float64)
    after = F.avg_pool2d(st.proj(f), 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(st(f), after)


@pytest.mark.equiv
def test_upconv_turns_each_token_into_its_own_block():
    """kernel = stride: output block (i, j) depends on input pixel (i, j) only, through the weight."""
    torch.manual_seed(0)
    up = tf.up_conv(4, 3, 2).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    y = up(x)
    assert y.shape == (1, 3, 6, 6)
    expected = torch.einsum("c,cokl->okl", x[0, :, 1, 2], up.weight) + up.bias.view(-1, 1, 1)
    torch.testing.assert_close(y[0, :, 2:4, 4:6], expected)


# ------------------------------------------------------------------------------------------------------
# Attention maps (the repository's convention)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_attention_maps(name):
    m = tiny(name).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    attns = {n: a for n, a in m.named_modules() if isinstance(a, tf.Attention)}
    assert len(attns) == 12
    inputs, outputs = {}, {}
    def keep(mod, inp, out, n):
        inputs[n], outputs[n] = inp[0], out

    hooks = [a.register_forward_hook(partial(keep, n=n)) for n, a in attns.items()]
    with torch.no_grad():
        m(x)                                                  # fast path (SDPA): outputs to compare with
    maps = tf.attention_maps(m, x)
    for h in hooks:
        h.remove()
    assert maps.keys() == attns.keys()
    for n, a in attns.items():
        B, N, D = inputs[n].shape
        hd = D // a.num_heads
        # the formula restated: q, k from the qkv Linear (ViT's [q | k | v] layout), softmax(q k^T / sqrt(d))
        qkv = F.linear(inputs[n], a.qkv.weight, a.qkv.bias).view(B, N, 3, a.num_heads, hd)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        expected = torch.softmax(torch.einsum("bhnd,bhmd->bhnm", q, k) / hd ** 0.5, dim=-1)
        assert maps[n].shape == (B, a.num_heads, N, N)
        torch.testing.assert_close(maps[n], expected)
        # and the map is the one the fused SDPA path used: proj(A v) is the module's output
        out = a.proj(torch.einsum("bhnm,bhmd->bnhd", maps[n], v).reshape(B, N, D))
        torch.testing.assert_close(out, outputs[n])
    assert all(not a.keep_attn and "last_attn" not in a.__dict__ for a in attns.values())


def test_attention_maps_restores_flags_after_an_error():
    m = tiny("token_fusion_layer").eval()
    m.mixing[0].blocks[0].attn.keep_attn = True   # a flag the caller had set stays set
    with pytest.raises(ValueError):
        tf.attention_maps(m, torch.randn(2, 3, 32, 32))  # wrong size: raises inside the forward
    flags = [a.keep_attn for a in m.modules() if isinstance(a, tf.Attention)]
    assert flags == [True] + [False] * 11
    assert not any("last_attn" in a.__dict__ for a in m.modules())


# ------------------------------------------------------------------------------------------------------
# Ecosystem: FX feature extraction, torch.export, torch.compile(fullgraph=True)
# ------------------------------------------------------------------------------------------------------
def shallow(name):
    return tiny(name, head="mixing", **SHALLOW[name]).eval()


@pytest.mark.compile
@pytest.mark.parametrize("name", METHODS)
def test_create_feature_extractor_matches_forward_hooks(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    m = shallow(name)
    x = torch.randn(2, 3, 64, 64)
    wanted = [n for n, mod in m.named_modules() if isinstance(mod, tf.Block)] + \
             [f"cnn.stages.{i}" for i in range(5)] + ["head.norm"]
    seen = {}
    hooks = [m.get_submodule(n).register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o))
             for n in wanted]
    with torch.no_grad():
        y = m(x)
    for h in hooks:
        h.remove()
    fx = create_feature_extractor(m, return_nodes={n: n for n in wanted} | {"head.fc": "logits"})
    with torch.no_grad():
        got = fx(x)
    for n in wanted:
        torch.testing.assert_close(got[n], seen[n], msg=n)
    torch.testing.assert_close(got["logits"], y)


@pytest.mark.compile
@pytest.mark.parametrize("name", METHODS)
def test_torch_export_equals_eager(name):
    m = shallow(name)
    x = torch.randn(2, 3, 64, 64)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.compile
@pytest.mark.parametrize("name", METHODS)
def test_torch_compile_fullgraph_equals_eager(name):
    torch._dynamo.reset()
    m = shallow(name)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))


# ------------------------------------------------------------------------------------------------------
# Frozen backbone
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_frozen_cnn_gets_no_gradient_and_keeps_bn_statistics(name):
    m = tiny(name, freeze_cnn=True).train()
    assert not m.cnn.training and m.training
    assert all(not p.requires_grad for p in m.cnn.parameters())
    assert n_params(m, trainable=True) == n_params(m) - n_params(m.cnn)
    stats = {k: v.clone() for k, v in m.cnn.state_dict().items() if "running" in k}
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in m.cnn.parameters())
    assert_all_grads(m)  # everything else trains
    for k, v in m.cnn.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, stats[k], msg=k)


# ------------------------------------------------------------------------------------------------------
# Bad input and bad configuration
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_layer_model():
    return tiny("token_fusion_layer").eval()


def test_bad_inputs(small_layer_model):
    m = small_layer_model
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="3 colour channels.*got 1"):
        m(torch.randn(2, 1, 64, 64))
    with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
        m(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="built for 64 x 64.*img_size=32"):
        m(torch.randn(2, 3, 32, 32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[1.0]])
    with pytest.raises(ValueError, match="expected a batch"):
        m.forward_features(torch.randn(64, 64))


@pytest.mark.parametrize("name,kw,match", [
    ("token_fusion_layer", dict(head="cls"), "head must be one of"),
    ("token_fusion_layer", dict(img_size=100), "multiple of 32"),
    ("token_fusion_layer", dict(patch_size=12), "patch_size"),
    ("token_fusion_layer", dict(embed_dim=30, num_heads=4), "divisible by num_heads"),
    ("token_fusion_layer", dict(num_classes=0), "num_classes"),
    ("token_fusion_late", dict(patch_size=4, img_size=64), "patch_size 8, 16, 32 or 64"),
    ("token_fusion_late", dict(depth=7), "must be even"),
    ("token_fusion_late", dict(upsample="bilinear"), "upconv"),
    ("token_fusion_late", dict(combine="mul"), "concat"),
    ("token_fusion_early", dict(bridges="two"), "multi"),
    ("token_fusion_early", dict(upsample="nearest"), "upconv"),
    ("token_fusion_layer", dict(cnn_layers=(1, 1, 1)), "four positive ints"),
    ("token_fusion_layer", dict(pretrained_cnn=True, cnn_layers=(1, 1, 1, 1)), "ResNet-101's ImageNet"),
    ("token_fusion_early", dict(pretrained_cnn=True, cnn_layers=(3, 4, 23, 3), cnn_width=64, cnn_base=32),
     "ResNet-101's ImageNet"),
    ("token_fusion_layer", dict(cnn_base=2), "cnn_base"),
])
def test_bad_configurations(name, kw, match):
    with pytest.raises(ValueError, match=match):
        with torch.device("meta"):
            tf.MODELS[name](**{**dict(TINY, num_heads=2), **kw})


# ------------------------------------------------------------------------------------------------------
# No network access with the defaults; the pretrained flag is the only way to it
# ------------------------------------------------------------------------------------------------------
class NetworkUsed(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    def boom(*a, **k):
        raise NetworkUsed("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", boom)


@pytest.mark.parametrize("name", METHODS)
def test_defaults_build_without_network(no_network, name):
    m = build_meta(name)
    assert n_params(m) > 1e8


def test_small_model_runs_without_network(no_network):
    assert tiny("token_fusion_early")(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_pretrained_flag_is_what_reaches_the_network(no_network):
    with pytest.raises(NetworkUsed):
        build_meta("token_fusion_layer", pretrained_cnn=True)

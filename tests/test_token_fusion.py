"""Token Fusion (papers/token_fusion.py): what the module and its docstring claim, checked.

Full-size models (~140M parameters) are built on the meta device (no memory, no compute) for parameter
counts; shapes, gradients and equivalences use a small configuration of the same structure (64 x 64 inputs,
16 x 16 patches, so the stride relations between ResNet stages and the patch grid are those of 224 / 16);
one full-size forward at 224 checks the default model for real.
"""
import socket
import urllib.request

import pytest
import torch
import torchvision

from papers import token_fusion as tf

TINY = dict(img_size=64, patch_size=16, embed_dim=32, num_heads=2, cnn_layers=(1, 1, 1, 1), cnn_width=8,
            num_classes=5)
METHODS = ("token_fusion_late", "token_fusion_early", "token_fusion_layer")
COMBOS = [(m, h) for m in METHODS for h in tf.HEADS]

# Measured once (see the module docstring's table); regression values for the nine full-size combinations.
FULL_PARAMS = {
    ("token_fusion_late", "token"): 133_619_624, ("token_fusion_late", "channel"): 134_371_624,
    ("token_fusion_late", "mixing"): 135_155_624,
    ("token_fusion_early", "token"): 138_632_723, ("token_fusion_early", "channel"): 139_204_723,
    ("token_fusion_early", "mixing"): 139_400_723,
    ("token_fusion_layer", "token"): 139_758_536, ("token_fusion_layer", "channel"): 140_330_536,
    ("token_fusion_layer", "mixing"): 140_526_536,
}


def n_params(m, trainable=False):
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


def build_meta(name, **kw):
    with torch.device("meta"):
        return tf.MODELS[name](**kw)


def tiny(name, **kw):
    torch.manual_seed(0)
    return tf.MODELS[name](**{**TINY, **kw})


def assert_all_grads(model, frozen_prefix=None):
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"no (finite) gradient for {missing[:5]} ..."
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
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
    t_vit, t_cnn = m.streams(x)
    assert t_vit.shape == t_cnn.shape == (2, 64, 32)
    if upsample == "copy":  # each ViT token copied to its 2 x 2 block
        grid = t_vit.transpose(1, 2).reshape(2, 32, 8, 8)
        torch.testing.assert_close(grid[..., 0::2, 0::2], grid[..., 1::2, 1::2])
        assert m.fusion.up is None
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


@pytest.mark.parametrize("head", tf.HEADS)
def test_layer_class_token_variant(head):
    m = tiny("token_fusion_layer", class_token=True, head=head)
    x = torch.randn(2, 3, 64, 64)
    assert m.forward_features(x).shape == (2, 1 + 16, 32)
    pairs = m.streams(x)
    assert len(pairs) == 5 and all(a.shape == b.shape == (2, 16, 32) for a, b in pairs)  # cls kept out
    m(x).sum().backward()
    assert_all_grads(m)


def test_layer_streams_are_the_concatenated_pairs():
    m = tiny("token_fusion_layer").eval()
    x = torch.randn(1, 3, 64, 64)
    pairs = m.streams(x)
    assert len(pairs) == 5
    # the first pair's CNN tokens are conv1's 32 x 32 map pooled 8 x 8 onto the 4 x 4 patch grid
    f0 = m.cnn.stages[0](x)
    torch.testing.assert_close(pairs[0][1], m.mixing[0].tokens(f0))


# ------------------------------------------------------------------------------------------------------
# Structure promised by the paper
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_twelve_transformer_blocks_and_no_class_token(name):
    m = build_meta(name)
    assert sum(isinstance(b, tf.Block) for b in m.modules()) == 12  # "all three models ... 12 blocks"
    assert not any("cls" in n for n, _ in m.named_parameters())       # "We do not use a class token"


def test_default_heads_are_table1_best():
    heads = {n: build_meta(n).head.kind for n in METHODS}
    best = {}
    for (method, head), acc in tf.PAPER_TOP1.items():
        if acc > best.get(method, (None, -1))[1]:
            best[method] = (head, acc)
    assert heads == {f"token_fusion_{k}": v[0] for k, v in best.items()}
    assert heads["token_fusion_layer"] == "channel"


def test_layer_model_mixing_blocks_follow_resnet_stages():
    m = build_meta("token_fusion_layer")
    assert len(m.mixing) == 5 and all(len(b.blocks) == 2 for b in m.mixing) and len(m.encoder.blocks) == 2
    assert m.cnn.channels == [64, 256, 512, 1024, 2048] and m.cnn.strides == [2, 4, 8, 16, 32]
    assert [b.tokens.pool for b in m.mixing] == [8, 4, 2, 1, 1]
    assert [b.tokens.up is not None for b in m.mixing] == [False] * 4 + [True]


def test_thin_trunk_keeps_the_structure():
    m = tiny("token_fusion_layer", cnn_base=16, img_size=32, patch_size=8)
    assert m.cnn.channels == [16, 64, 128, 256, 512] and m.cnn.strides == [2, 4, 8, 16, 32]
    late = tiny("token_fusion_late", cnn_base=16, img_size=32, patch_size=8)
    assert late.cnn.strides == [2, 4, 4, 4, 4]  # patch 8: CNN tokens at stride 4 (layer2-4 dilated)
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == late(x).shape == (2, 5)
    assert late.forward_features(x).shape == (2, 64, 64)


def test_late_model_dilated_trunk_and_upconv_x4():
    m = tiny("token_fusion_late")
    assert m.cnn.strides[-1] == 8
    x = torch.randn(1, 3, 64, 64)
    assert m.cnn(x)[-1].shape[-1] == 64 // 8              # CNN tokens: (H/8)^2
    assert m.patch_embed(x).shape[1] * 4 == (64 // 8) ** 2  # ViT tokens expanded four times


# ------------------------------------------------------------------------------------------------------
# Parameter counts (full size, meta device)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.params
@pytest.mark.parametrize("name,head", COMBOS)
def test_full_size_parameter_counts(name, head):
    m = build_meta(name, head=head)
    n = n_params(m)
    assert n == FULL_PARAMS[(name, head)]
    # "all models were configured to have a similar size": every combination within 5% of the paper's 140M.
    assert abs(n - 140e6) / 140e6 < 0.05


@pytest.mark.params
def test_paper_140m_for_the_best_model():
    n = n_params(build_meta("token_fusion_layer"))  # default head: channel-wise (Tables 2-3's "Ours")
    assert abs(n - tf.PAPER_PARAMS["token_fusion_layer"]) / tf.PAPER_PARAMS["token_fusion_layer"] < 0.05
    assert abs(n - 140e6) / 140e6 < 0.005  # 140.33M


@pytest.mark.params
def test_layer_model_parameter_budget_matches_docstring():
    m = build_meta("token_fusion_layer")
    with torch.device("meta"):
        r101 = torchvision.models.resnet101(weights=None)
    trunk = n_params(r101) - n_params(r101.fc)
    assert n_params(m.cnn) == trunk == 42_500_160
    blocks = sum(n_params(b) for b in m.modules() if isinstance(b, tf.Block))
    assert blocks == 12 * 7_087_872
    proj = sum(n_params(b.tokens.proj) for b in m.mixing)
    up = sum(n_params(b.tokens.up) for b in m.mixing if b.tokens.up is not None)
    integrate = sum(n_params(b.integrate) for b in m.mixing)
    assert (proj, up, integrate) == (3_002_112, 2_360_064, 5_902_080)
    rest = n_params(m.patch_embed) + m.pos_embed.numel() + n_params(m.encoder.norm) + n_params(m.head)
    assert trunk + blocks + proj + up + integrate + rest == n_params(m)


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
    """Attention (softmax vs SDPA), UpConv (conv_transpose2d vs einsum), copy bridges: all at once."""
    m = tiny(name, **({"upsample": "copy"} if name == "token_fusion_early" else {})).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y_fast, g_fast = _outputs_and_grads(m.set_naive(False), x)
    y_naive, g_naive = _outputs_and_grads(m.set_naive(True), x)
    assert any(isinstance(a, tf.Attention) and a.naive for a in m.modules())
    assert any(isinstance(a, (tf.UpConv, tf.BridgeBlock)) and a.naive for a in m.modules())
    torch.testing.assert_close(y_fast, y_naive)
    assert g_fast.keys() == g_naive.keys()
    for k in g_fast:
        torch.testing.assert_close(g_fast[k], g_naive[k], msg=k)


@pytest.mark.equiv
@pytest.mark.parametrize("c_in,c_out,f", [(64, 3, 8), (32, 32, 2)])
def test_upconv_equals_conv_transpose2d(c_in, c_out, f):
    """UpConv's einsum path == nn.ConvTranspose2d(kernel=stride=f) with the same weights (outputs, grads)."""
    torch.manual_seed(0)
    up = tf.UpConv(c_in, c_out, f).double()
    ref = torch.nn.ConvTranspose2d(c_in, c_out, f, stride=f).double()
    ref.load_state_dict(up.state_dict())
    x1 = torch.randn(2, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = up(x1), ref(x2)
    assert y1.shape == (2, c_out, 3 * f, 3 * f)
    torch.testing.assert_close(y1, y2)
    y1.pow(2).sum().backward()
    y2.pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(up.weight.grad, ref.weight.grad)
    torch.testing.assert_close(up.bias.grad, ref.bias.grad)


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
    after = torch.nn.functional.avg_pool2d(st.proj(f), 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(st(f), after)


@pytest.mark.equiv
def test_early_streams_split_the_patch_embedding():
    """Eq. 1 on the 18-channel map = image part + CNN part (+ bias): the notebook's two token types."""
    m = tiny("token_fusion_early").double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    t_img, t_cnn = m.streams(x)
    full = m.patch_embed(m.unified_map(x))
    torch.testing.assert_close(t_img + t_cnn + m.patch_embed.proj.bias, full)


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


# ------------------------------------------------------------------------------------------------------
# One real full-size forward
# ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_size_default_forward_at_224():
    torch.manual_seed(0)
    m = tf.MODELS["token_fusion_layer"]().eval()
    assert n_params(m) == FULL_PARAMS[("token_fusion_layer", "channel")]
    with torch.no_grad():
        y = m(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()

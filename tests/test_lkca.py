"""papers/lkca.py: shapes; exact parameter counts (vs a closed-form formula, the authors' code and Tables I-V);
the attention view is Algorithm 1 (T built by the sliding window, applied as one (N, N) @ (B, N, C) product);
the three LKCA views equal (outputs and gradients); shift equivariance with zero padding; fused vs naive MHSA;
attention_maps; FX / torch.export / torch.compile; gradients; bad input."""
import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from common.flops import count_macs, count_params
from papers import lkca
from papers.lkca import LKCA, MODELS, PAPER_MACS, PAPER_PARAMS, ViT


def _randomise_kernels(model, std=0.05):
    """The kernels are zero-initialised (as in the paper), which makes T = 0; use random ones to test maths."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, LKCA):
            m.kernel.data = torch.randn(m.kernel.shape, generator=g) * std
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_variant_runs(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=7, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    feats = model.forward_features(x)
    n_tokens = 64 + (1 if model.pool == "cls" else 0)
    assert feats.shape == (2, n_tokens, model.dim)
    torch.testing.assert_close(model.forward_head(feats), y)


@pytest.mark.parametrize("img_size,patch,grid", [(32, None, 8), (64, None, 8), (48, 4, 12), (40, 8, 5), (256, None, 8)])
def test_other_sizes(img_size, patch, grid):
    model = lkca.lkca_t(num_classes=3, img_size=img_size, patch_size=patch, depth=2)
    assert model.grid == grid and model.blocks[0].mixer.kernel.shape == (2 * grid - 1, 2 * grid - 1)
    assert model(torch.randn(1, 3, img_size, img_size)).shape == (1, 3)


# --------------------------------------------------------------------------------------------------------
# Parameter counts: pinned exactly
# --------------------------------------------------------------------------------------------------------
SETTINGS = {"cifar10": (10, 32), "tiny-imagenet": (200, 64)}

# count_params of our models, exactly.
EXACT = {
    "cifar10": {
        "vit": 2_692_426, "vit_05m": 479_890, "vit_1m": 1_060_674, "vit_2m": 1_955_010, "vit_4m": 3_951_298,
        "vit_8m": 7_852_114, "vit_05m_lkca": 500_710, "vit_1m_lkca": 1_027_611, "vit_2m_lkca": 2_030_515,
        "vit_lkca": 2_691_310, "vit_4m_lkca": 4_048_939, "vit_8m_lkca": 7_941_106, "vit_12m_lkca": 12_528_190,
        "lkca_t": 1_027_611, "lkca_b": 2_691_310, "lkca_l": 12_528_190},
    "tiny-imagenet": {
        "vit": 2_756_744, "vit_05m": 520_160, "vit_1m": 1_106_288, "vit_2m": 2_022_000, "vit_4m": 4_039_664,
        "vit_8m": 7_956_512, "vit_05m_lkca": 534_300, "vit_1m_lkca": 1_073_225, "vit_2m_lkca": 2_094_833,
        "vit_lkca": 2_761_640, "vit_4m_lkca": 4_131_293, "vit_8m_lkca": 8_043_500, "vit_12m_lkca": 12_648_620,
        "lkca_t": 1_073_225, "lkca_b": 2_761_640, "lkca_l": 12_648_620},
}

# The authors' code (models/create_model.py), counted by building it: recorded in thousands of parameters.
# Their LKCA models carry an unused D-wide class token that ours leave out; their ViTs use theirs.
AUTHORS_CODE_K = {
    "cifar10": {"vit": 2692, "vit_05m": 480, "vit_1m": 1061, "vit_2m": 1955, "vit_4m": 3951, "vit_8m": 7852,
                "vit_05m_lkca": 501, "vit_1m_lkca": 1028, "vit_2m_lkca": 2031, "vit_lkca": 2692,
                "vit_4m_lkca": 4049, "vit_8m_lkca": 7941, "vit_12m_lkca": 12529},
    "tiny-imagenet": {"vit": 2757, "vit_05m": 520, "vit_1m": 1106, "vit_2m": 2022, "vit_4m": 4040,
                      "vit_8m": 7957, "vit_05m_lkca": 534, "vit_1m_lkca": 1073, "vit_2m_lkca": 2095,
                      "vit_lkca": 2762, "vit_4m_lkca": 4132, "vit_8m_lkca": 8044, "vit_12m_lkca": 12649},
}


def _build_meta(name, num_classes, img_size, **kw):
    with torch.device("meta"):                       # shapes only: counting 12M parameters costs nothing
        return MODELS[name](num_classes=num_classes, img_size=img_size, **kw)


def _formula(name, num_classes, img_size):
    """The parameter count restated from the architecture (§III-B3 + the authors' code), term by term."""
    depth, D, h, dh, M, mixer = lkca.CONFIGS[lkca.ALIASES.get(name, name)]
    p = img_size // 8
    N, K, inner = (img_size // p) ** 2, 2 * (img_size // p) - 1, h * dh
    lkca_model = mixer == "lkca"
    embed = p * p * 3 * D + D                                    # E (Linear with bias)
    pos = (N + (0 if lkca_model else 1)) * D                     # E_pos (+ the class token's slot)
    cls = 0 if lkca_model else D                                 # the baseline's class token
    layernorm = 2 * D                                            # weight + bias
    if lkca_model:
        mix = D * inner + K * K + inner * D + D                  # to_v (no bias), kernel, to_out
    else:
        mix = D * 3 * inner + inner * D + D                      # to_qkv (no bias), to_out
    mlp = D * M + M + M * D + D
    head = layernorm + D * num_classes + num_classes             # Eq. 5 LN, then the Linear classifier
    return embed + pos + cls + depth * (2 * layernorm + mix + mlp) + head


@pytest.mark.params
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_parameter_counts_exact(setting):
    num_classes, img_size = SETTINGS[setting]
    for name in MODELS:
        ours = count_params(_build_meta(name, num_classes, img_size))
        assert ours == EXACT[setting][name], f"{name} on {setting}: {ours:,} != pinned {EXACT[setting][name]:,}"
        assert ours == _formula(name, num_classes, img_size), f"{name} on {setting}: {ours:,} != formula"


@pytest.mark.params
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_parameter_counts_are_the_authors_code_minus_its_unused_class_token(setting):
    for name, code_k in AUTHORS_CODE_K[setting].items():
        depth, D, *_, mixer = lkca.CONFIGS[name]
        theirs = EXACT[setting][name] + (D if mixer == "lkca" else 0)
        assert round(theirs / 1000) == code_k, f"{name} on {setting}: {theirs:,} vs the code's {code_k}k"


@pytest.mark.params
@pytest.mark.parametrize("setting", sorted(PAPER_PARAMS))
def test_parameter_counts_beside_the_paper(setting):
    """The paper rounds to 10k parameters: ours within 0.5% (the largest gap is ViT/8M-LKCA, 7.94M vs 7.98M)."""
    dataset, num_classes, img_size = setting
    for name, paper in PAPER_PARAMS[setting].items():
        ours = EXACT[dataset][name]
        assert abs(ours - paper) / paper < 0.005, f"{name} on {dataset}: {ours:,} vs paper {paper:,.0f}"


@pytest.mark.params
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_layernorm_is_affine(name):
    """Eq. 3-5: LN before each module and before the head, each with its learned scale and shift."""
    model = _build_meta(name, 10, 32)
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * len(model.blocks) + 1
    for n, m in norms:
        assert m.elementwise_affine and m.weight is not None and m.bias is not None, f"{n} is not affine"
        assert m.weight.shape == m.bias.shape == (model.dim,) and m.weight.requires_grad and m.bias.requires_grad


@pytest.mark.params
def test_lkca_layer_parameter_formula():
    """Per layer LKCA costs 2 D^2 + D + (2s-1)^2 parameters (MHSA: 4 D^2 + D)."""
    m = LKCA(dim=210, grid=8)
    assert count_params(m) == 2 * 210 ** 2 + 210 + 15 ** 2
    assert count_params(lkca.Attention(210, heads=10, dim_head=21)) == 4 * 210 ** 2 + 210


@pytest.mark.params
@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_macs_in_the_papers_convention(name):
    """The paper's 'Flops' are ptflops numbers (Linear layers only, plus a little for norms/activations that
    FlopCounterMode does not count): our Linear-only MACs are within 3% below them; the total is larger."""
    r = count_macs(MODELS[name](num_classes=10, img_size=32), img_size=32)
    assert 0.97 < r["layers"] / PAPER_MACS[name] < 1.0, (name, r["layers"], PAPER_MACS[name])
    assert r["total"] > r["layers"]


@pytest.mark.params
def test_total_macs_depend_on_the_view():
    """LKCA-B: T @ V costs N^2 MACs per channel, the convolution N * K^2 (it also multiplies the padding)."""
    model = lkca.lkca_b(num_classes=10, img_size=32)
    total = {v: count_macs(model.set_view(v), img_size=32)["total"] for v in lkca.VIEWS}
    N, K, D, depth = 64, 15, 210, 10
    assert total["gemm"] == total["attention"]
    assert total["conv"] - total["gemm"] == depth * D * (N * K * K - N * N)
    assert round(total["gemm"] / 1e5) == 1786 and round(total["conv"] / 1e5) == 2002   # 178.6M vs 200.2M


# --------------------------------------------------------------------------------------------------------
# The views: Algorithm 1 as written, Algorithm 2, and the batched GEMM
# --------------------------------------------------------------------------------------------------------
def _algorithm1_loop(w: torch.Tensor, s: int) -> torch.Tensor:
    """Algorithm 1 lines 5-13, literally: slide an s x s window over w from the bottom-right corner."""
    rows = []
    for i in range(s):
        for j in range(s):
            start_row, start_col = s - 1 - i, s - 1 - j
            rows.append(w[start_row:start_row + s, start_col:start_col + s].flatten())
    return torch.stack(rows)


def _lkca_formula(w: torch.Tensor, v: torch.Tensor, s: int) -> torch.Tensor:
    """out[(i, j)] = sum over in-grid (a, b) of w[a - i + s - 1, b - j + s - 1] v[(a, b)]: zero padding."""
    out = torch.zeros_like(v)
    for i in range(s):
        for j in range(s):
            for a in range(s):
                for b in range(s):
                    out[:, i * s + j] += w[a - i + s - 1, b - j + s - 1] * v[:, a * s + b]
    return out


@pytest.mark.equiv
@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_toeplitz_is_algorithm_1(s):
    m = LKCA(dim=4, grid=s)
    m.kernel.data = torch.randn(2 * s - 1, 2 * s - 1)
    torch.testing.assert_close(m.toeplitz(), _algorithm1_loop(m.kernel.data, s), rtol=0, atol=0)


_MATMULS = {operator.matmul, torch.matmul, torch.bmm, torch.mm, torch.einsum, F.conv2d, torch.conv2d}


@pytest.mark.equiv
@pytest.mark.parametrize("s", [3, 8])
def test_attention_view_is_algorithm_1_as_written(s):
    """view="attention" computes exactly one product, T @ V, with T the (N, N) matrix of Algorithm 1 lines 5-13
    and V the (B, N, C) output of to_v: one map broadcast over the batch, no per-head split, no convolution."""
    torch.manual_seed(s)
    B, D, N = 3, 12, s * s
    m = LKCA(dim=D, grid=s, view="attention").double()
    m.kernel.data.normal_()
    x = torch.randn(B, N, D, dtype=torch.float64)
    gm = torch.fx.symbolic_trace(m)
    products = [n for n in gm.graph.nodes
                if (n.op == "call_function" and n.target in _MATMULS)
                or (n.op == "call_method" and n.target in ("matmul", "__matmul__", "bmm", "mm"))]
    assert len(products) == 1, [n.format_node() for n in products]
    prod = products[0]
    assert prod.target in (operator.matmul, torch.matmul, "matmul", "__matmul__"), prod.format_node()

    values = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    out = Record(gm).run(x)
    T, V = values[prod.args[0]], values[prod.args[1]]
    assert T.shape == (N, N) and V.shape == (B, N, D)
    torch.testing.assert_close(T, _algorithm1_loop(m.kernel.data, s), rtol=0, atol=0)
    torch.testing.assert_close(V, m.to_v(x), rtol=0, atol=0)
    torch.testing.assert_close(out, m.to_out(T @ V), rtol=0, atol=0)
    torch.testing.assert_close(out, m(x), rtol=0, atol=0)


@pytest.mark.equiv
@pytest.mark.parametrize("s", [1, 2, 3, 5, 8, 9])
def test_three_views_agree_outputs_and_gradients(s):
    torch.manual_seed(s)
    B, D = 3, 12
    m = LKCA(dim=D, grid=s).double()
    m.kernel.data.normal_()
    x = torch.randn(B, s * s, D, dtype=torch.float64)
    results = {}
    for view in lkca.VIEWS:
        m.view = view
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results[view] = (out.detach(), xi.grad, {n: p.grad.clone() for n, p in m.named_parameters()})
    ref_out, ref_gx, ref_gp = results["conv"]
    if s <= 5:   # the zero-padded sum, restated literally (slow: s^4 terms)
        torch.testing.assert_close(ref_out, m.to_out(_lkca_formula(m.kernel.data, m.to_v(x), s)).detach())
    for view in ("gemm", "attention"):
        out, gx, gp = results[view]
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(gx, ref_gx)
        for n in ref_gp:
            torch.testing.assert_close(gp[n], ref_gp[n], msg=f"{view}: grad of {n}")


@pytest.mark.equiv
def test_views_agree_on_a_whole_model():
    torch.manual_seed(0)
    model = _randomise_kernels(lkca.lkca_t(num_classes=5, img_size=32, depth=3)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    outs = {v: model.set_view(v)(x) for v in lkca.VIEWS}
    torch.testing.assert_close(outs["gemm"], outs["conv"])
    torch.testing.assert_close(outs["attention"], outs["conv"])


@pytest.mark.equiv
def test_fused_attention_equals_naive():
    torch.manual_seed(0)
    model = lkca.vit(num_classes=5, img_size=32, depth=2).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fused = model(x)
    for m in model.modules():
        if isinstance(m, lkca.Attention):
            m.fused = False
    torch.testing.assert_close(model(x), fused)
    assert model.blocks[0].mixer.last_attn is None        # only keep_attn stores maps


# --------------------------------------------------------------------------------------------------------
# Shift equivariance (zero padding at the border)
# --------------------------------------------------------------------------------------------------------
def _shift(v, s, dy, dx):
    """Move every token (dy, dx) on the s x s grid; tokens that leave the grid are dropped, zeros come in."""
    g = v.view(v.shape[0], s, s, -1)
    out = torch.zeros_like(g)
    out[:, max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = \
        g[:, max(-dy, 0):s + min(-dy, 0), max(-dx, 0):s + min(-dx, 0)]
    return out.view_as(v)


def _inside(s, dy, dx):
    """(N,) mask of the output tokens whose source (i - dy, j - dx) is on the grid."""
    i, j = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    return ((i - dy >= 0) & (i - dy < s) & (j - dx >= 0) & (j - dx < s)).flatten()


@pytest.mark.equiv
@pytest.mark.parametrize("view", lkca.VIEWS)
@pytest.mark.parametrize("dy,dx", [(1, 0), (0, -2), (2, 3), (-3, -1)])
def test_shift_equivariance(view, dy, dx):
    """Shift the tokens, and the output shifts the same way: LKCA(shift V) = shift LKCA(V) on every token whose
    source is on the grid, exactly when no input token is pushed off the grid. With zero padding, tokens that
    are pushed off are simply gone: LKCA(shift V) = shift LKCA(V) - shift LKCA(V_lost) there (not circular)."""
    torch.manual_seed(0)
    s, B, C = 6, 2, 3
    m = LKCA(dim=C, grid=s, view=view).double()
    m.kernel.data.normal_()
    v = torch.randn(B, s * s, C, dtype=torch.float64)
    keep = _inside(s, -dy, -dx).view(1, -1, 1)            # input tokens that stay on the grid after the shift
    v_kept, v_lost = v * keep, v * ~keep
    inside = _inside(s, dy, dx)
    # 1. equivariance for an input that stays on the grid
    lhs, rhs = m.mix(_shift(v_kept, s, dy, dx)), _shift(m.mix(v_kept), s, dy, dx)
    torch.testing.assert_close(lhs[:, inside], rhs[:, inside])
    torch.testing.assert_close(lhs, _lkca_formula(m.kernel.data, _shift(v_kept, s, dy, dx), s))  # border too
    # 2. a general input: the tokens pushed off the grid no longer contribute (zero padding)
    lhs, rhs = m.mix(_shift(v, s, dy, dx)), _shift(m.mix(v) - m.mix(v_lost), s, dy, dx)
    torch.testing.assert_close(lhs[:, inside], rhs[:, inside])
    assert not torch.allclose(lhs[:, inside], _shift(m.mix(v), s, dy, dx)[:, inside])   # the lost tokens mattered
    circular = torch.roll(v.view(B, s, s, C), (dy, dx), (1, 2)).reshape(B, s * s, C)
    assert not torch.allclose(m.mix(circular), torch.roll(m.mix(v).view(B, s, s, C), (dy, dx), (1, 2))
                              .reshape(B, s * s, C))                                      # not circular padding


def test_delta_kernel_moves_every_token():
    """A delta kernel at offset (1, 0) moves every token one row down (zeros come in at the top)."""
    s = 4
    m = LKCA(dim=1, grid=s)
    m.kernel.data.zero_()
    m.kernel.data[s - 1 - 1, s - 1] = 1.0        # out[i, j] = v[i - 1, j]
    v = torch.arange(1.0, s * s + 1).view(1, s * s, 1)
    for view in lkca.VIEWS:
        m.view = view
        out = m.mix(v).view(s, s)
        expected = torch.cat([torch.zeros(1, s), v.view(s, s)[:-1]])
        torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------------------------------------
# Attention maps (repository convention)
# --------------------------------------------------------------------------------------------------------
def test_attention_maps():
    torch.manual_seed(0)
    model = ViT(img_size=32, num_classes=3, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32,
                mixer=["lkca", "attention"], drop_path=0.0).double().eval()
    _randomise_kernels(model)
    model.blocks[1].mixer.keep_attn = "sentinel"             # a flag value that must be restored as it was
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ln_in = {}
    model.blocks[1].norm1.register_forward_hook(lambda mod, i, o: ln_in.setdefault("x", o))
    with torch.no_grad():
        expected_logits = model(x)
    maps = lkca.attention_maps(model, x)
    assert sorted(maps) == ["blocks.0.mixer", "blocks.1.mixer"]
    # LKCA: the (N, N) map of Algorithm 1
    torch.testing.assert_close(maps["blocks.0.mixer"], _algorithm1_loop(model.blocks[0].mixer.kernel.data, 8))
    # MHSA: softmax(Q K^T / sqrt(d)), computed here from the weights
    att = model.blocks[1].mixer
    q, k, _ = (ln_in["x"] @ att.to_qkv.weight.T).split(16, dim=-1)                   # (B, N, h*d) each
    q, k = (t.view(2, 64, 2, 8).transpose(1, 2) for t in (q, k))                     # (B, h, N, d)
    torch.testing.assert_close(maps["blocks.1.mixer"], (q @ k.transpose(-1, -2) / 8 ** 0.5).softmax(-1))
    # flags restored, maps dropped, model unchanged
    assert model.blocks[0].mixer.keep_attn is False and model.blocks[1].mixer.keep_attn == "sentinel"
    assert all(m.last_attn is None for m in (model.blocks[0].mixer, att))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected_logits)


# --------------------------------------------------------------------------------------------------------
# Gradients and initialisation
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lkca_t", "vit_05m"])
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=4, img_size=32, depth=2, drop_path=0.0)
    # With the paper's zero-initialised kernel, T = 0 and to_v's very first gradient is exactly zero (nothing
    # flows through a zero matrix); it becomes nonzero as soon as the kernel has moved. Test the trained regime.
    _randomise_kernels(model)
    model(torch.randn(3, 3, 32, 32)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_zero_initialised_kernel_mixes_no_tokens():
    """Algorithms 1-2 line 3 initialise the kernel to zeros: T = 0, LKCA outputs only to_out's bias, so a fresh
    block mixes no tokens (changing one token's input changes no other token's output)."""
    m = LKCA(dim=8, grid=3)
    assert m.kernel.abs().max() == 0
    x = torch.randn(2, 9, 8)
    torch.testing.assert_close(m(x), m.to_out[0].bias.expand(2, 9, 8), rtol=0, atol=0)
    block = lkca.Block(8, m, mlp_dim=16).eval()
    x2 = x.clone()
    x2[:, 4] += 1.0
    changed = (block(x2) - block(x)).abs().amax(dim=(0, 2)) > 0        # (N,)
    assert changed.tolist() == [i == 4 for i in range(9)]


def test_mixed_mixers_and_pooling():
    model = ViT(img_size=32, num_classes=3, dim=32, depth=4, heads=2, dim_head=16, mlp_dim=64,
                mixer=["lkca", "attention"] * 2)
    assert model.pool == "mean"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="mixer"):
        ViT(depth=2, mixer=["lkca"])


# --------------------------------------------------------------------------------------------------------
# Ecosystem: FX feature extraction, torch.export, torch.compile(fullgraph=True)
# --------------------------------------------------------------------------------------------------------
def _tiny(name, **kw):
    torch.manual_seed(0)
    return _randomise_kernels(MODELS[name](num_classes=3, img_size=32, depth=2, **kw)).eval()


@pytest.mark.compile
@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")   # DropPath is a no-op in eval mode
@pytest.mark.parametrize("name", sorted(MODELS))
def test_create_feature_extractor_matches_hooks(name):
    from torchvision.models.feature_extraction import create_feature_extractor
    model = _tiny(name)
    x = torch.randn(2, 3, 32, 32)
    extractor = create_feature_extractor(model, {"blocks.0": "blocks.0", "blocks.1": "blocks.1", "head": "head"})
    seen = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(f"blocks.{i}", out))
    with torch.no_grad():
        logits = model(x)
        feats = extractor(x)
    for k in ("blocks.0", "blocks.1"):
        torch.testing.assert_close(feats[k], seen[k], rtol=0, atol=0)
    torch.testing.assert_close(feats["head"], logits)


@pytest.mark.compile
@pytest.mark.parametrize("name,view", [(n, "gemm") for n in sorted(MODELS) if n not in ("lkca_t", "lkca_b", "lkca_l")]
                         + [("lkca_t", v) for v in lkca.VIEWS])
def test_torch_export_matches_eager(name, view):
    model = _tiny(name, view=view)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x))


@pytest.mark.compile
@pytest.mark.parametrize("name,view", [(n, "gemm") for n in sorted(MODELS) if n not in ("lkca_t", "lkca_b", "lkca_l")]
                         + [("lkca_t", v) for v in lkca.VIEWS])
def test_torch_compile_fullgraph_matches_eager(name, view):
    """aot_eager: checks there is no graph break without paying inductor's C++ compile."""
    torch._dynamo.reset()
    model = _tiny(name, view=view)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="aot_eager")(x), model(x))


# --------------------------------------------------------------------------------------------------------
# Bad input: clear errors before anything deep fails
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return lkca.lkca_t(num_classes=3, img_size=32, depth=1)


def test_missing_batch_dimension(small):
    with pytest.raises(ValueError, match=r"batch of images .*unsqueeze\(0\)"):
        small(torch.randn(3, 32, 32))


def test_wrong_channel_count(small):
    with pytest.raises(ValueError, match="expected 3 colour channels.*got 1"):
        small(torch.randn(2, 1, 32, 32))


def test_integer_pixels(small):
    with pytest.raises(TypeError, match=r"float.*x.float\(\) / 255"):
        small(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_wrong_image_size(small):
    with pytest.raises(ValueError, match="built for 32x32.*img_size=64"):
        small(torch.randn(2, 3, 64, 64))


def test_not_a_tensor(small):
    with pytest.raises(TypeError, match="torch.Tensor"):
        small([[0.0]])


def test_wrong_token_count():
    with pytest.raises(ValueError, match=r"3x3 grid: expected tokens \(B, 9, C\), got \(2, 16, 8\)"):
        LKCA(8, 3)(torch.randn(2, 16, 8))


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        lkca.lkca_t(img_size=36)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        lkca.lkca_t(img_size=32, patch_size=5)
    with pytest.raises(ValueError, match="view must be one of"):
        LKCA(8, 3, view="fft")

"""papers/lkca.py: shapes, parameter counts vs Tables I-V, the three LKCA views equal (outputs and gradients),
the Toeplitz matrix equals Algorithm 1's sliding window, fused vs naive MHSA, gradients, bad input."""
import pytest
import torch

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


@pytest.mark.params
@pytest.mark.parametrize("setting", sorted(PAPER_PARAMS))
def test_parameter_counts_match_paper(setting):
    dataset, num_classes, img_size = setting
    for name, paper in PAPER_PARAMS[setting].items():
        ours = count_params(MODELS[name](num_classes=num_classes, img_size=img_size))
        assert abs(ours - paper) / paper < 0.01, f"{name} on {dataset}: {ours:,} vs paper {paper:,.0f}"


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
    FlopCounterMode does not count): our Linear-only MACs are within 2% below them; the total is larger."""
    r = count_macs(MODELS[name](num_classes=10, img_size=32), img_size=32)
    assert 0.97 < r["layers"] / PAPER_MACS[name] < 1.0, (name, r["layers"], PAPER_MACS[name])
    assert r["total"] > r["layers"]


def _algorithm1_loop(w: torch.Tensor, s: int) -> torch.Tensor:
    """Algorithm 1 lines 5-13, literally: slide an s x s window over w from the bottom-right corner."""
    rows = []
    for i in range(s):
        for j in range(s):
            start_row, start_col = s - 1 - i, s - 1 - j
            rows.append(w[start_row:start_row + s, start_col:start_col + s].flatten())
    return torch.stack(rows)


@pytest.mark.equiv
@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_toeplitz_is_algorithm_1(s):
    m = LKCA(dim=4, grid=s)
    m.kernel.data = torch.randn(2 * s - 1, 2 * s - 1)
    torch.testing.assert_close(m.toeplitz(), _algorithm1_loop(m.kernel.data, s), rtol=0, atol=0)


@pytest.mark.equiv
@pytest.mark.parametrize("s,heads", [(1, 1), (2, 1), (3, 3), (5, 2), (8, 4), (9, 1)])
def test_three_views_agree_outputs_and_gradients(s, heads):
    torch.manual_seed(s)
    B, D = 3, 12
    m = LKCA(dim=D, grid=s, heads=heads).double()
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
    assert model.blocks[0].mixer.last_attn.shape == (2, 12, 65, 65)


def test_lkca_equals_a_global_convolution_and_is_shift_equivariant():
    """A delta kernel at offset (1, 0) moves every token one row down (zeros come in at the top)."""
    s = 4
    m = LKCA(dim=1, grid=s)
    m.kernel.data.zero_()
    m.kernel.data[s - 1 - 1, s - 1] = 1.0        # out[i, j] = v[i - 1, j]
    v = torch.arange(1.0, s * s + 1).view(1, s * s, 1)
    out = m.mix(v).view(s, s)
    expected = torch.cat([torch.zeros(1, s), v.view(s, s)[:-1]])
    torch.testing.assert_close(out, expected)


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


def test_zero_kernel_starts_as_identity_mixer():
    m = LKCA(dim=8, grid=3)
    x = torch.randn(2, 9, 8)
    torch.testing.assert_close(m(x), m.to_out[0].bias.expand(2, 9, 8))


def test_mixed_mixers_and_pooling():
    model = ViT(img_size=32, num_classes=3, dim=32, depth=4, heads=2, dim_head=16, mlp_dim=64,
                mixer=["lkca", "attention"] * 2)
    assert model.pool == "mean"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="mixer"):
        ViT(depth=2, mixer=["lkca"])


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


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        lkca.lkca_t(img_size=36)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        lkca.lkca_t(img_size=32, patch_size=5)
    with pytest.raises(ValueError, match="view must be one of"):
        LKCA(8, 3, view="fft")

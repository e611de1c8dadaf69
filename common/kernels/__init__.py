"""Fused Triton ops for the papers' hot paths, and `accelerate(model)` to swap them into a built model.

    from common.kernels import accelerate
    model = build_model("iianet", num_classes=10, img_size=64).cuda()
    report = accelerate(model)          # in place; same parameters and state_dict keys, same outputs

Kernels (each: Triton forward and backward, a PyTorch reference, autograd; fp32/fp16/bf16, fp64 for gradcheck):

1. `dwconv2d`: depthwise k x k conv (odd k, stride 1, 'same', dilation) + bias + folded eval-mode BN +
   activation (ReLU/ReLU6/GELU/GELU-tanh/SiLU/Hardswish), any memory format (channels-last is the fast one).
2. `lkca_mix`: LKCA's shared (2s-1)^2 kernel applied to V (B, N, C), Toeplitz tiles generated on the fly.
3. `eca`: ECA's pool + k-tap conv1d over channels + sigmoid + rescale, 2 kernels / 3 passes over x.

References (`common.kernels.reference`) are the baselines and the fallback. Triton is imported lazily (the
first time a Triton path runs), so importing this package never imports Triton. On CPU the kernels run only
under Triton's interpreter (`TRITON_INTERPRET=1` set before the kernels are first imported); see
docs/kernels.md for what the interpreter does and does not check. Benchmarks: `python -m common.kernels.bench`
(needs a CUDA GPU).
"""
from .accelerate import TritonDWConv2d, accelerate, is_same_depthwise, restore
from .ops import backend_summary, dwconv2d, eca, interpret_requested, lkca_mix, set_backend, triton_usable
from .reference import (dwconv2d_reference, eca_reference, fold_bn, lkca_mix_conv, lkca_mix_gemm,
                        lkca_toeplitz)

__all__ = ["accelerate", "restore", "dwconv2d", "lkca_mix", "eca", "dwconv2d_reference", "lkca_mix_gemm",
           "lkca_mix_conv", "lkca_toeplitz", "eca_reference", "fold_bn", "set_backend", "triton_usable",
           "backend_summary", "interpret_requested", "is_same_depthwise", "TritonDWConv2d"]

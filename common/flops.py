"""Parameter and MAC counts with ``torch.utils.flop_counter`` (no third-party counter).

Papers report "FLOPs" in different conventions, and the differences are large for hybrid models:

* **total**: every matmul and convolution that actually runs (what ``FlopCounterMode`` sees), including
  attention's QK^T and AV products and any convolution called functionally (``F.conv2d``).
* **layers**: only the work done inside ``nn.Linear`` and ``nn.Conv*`` modules. This is what module-hook
  counters such as ``thop`` and ``ptflops`` (pytorch backend) report: they never see a functional call or a
  bare ``@``. LKCA's paper used ptflops, so its table leaves out the functional large-kernel convolution and
  the ViT baselines' attention matmuls; iiANET's 8.22 "GFLOPs" also matches a counter that skips attention
  matmuls.

All numbers are **MACs** (multiply-accumulates): ``FlopCounterMode`` counts 2 FLOPs per MAC for matmuls and
convolutions, so we halve it. Normalisation layers, activations and softmax are not counted by
``FlopCounterMode`` (they are a few percent at most; ptflops adds a little for them).

    from common.flops import count_params, count_macs
    r = count_macs(model, img_size=32)
    print(r["total"] / 1e6, r["layers"] / 1e6, r["by_op"])
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA kernels of F.scaled_dot_product_attention but not the CPU one, so on a CPU
# a fused attention would silently count as zero. Register it (same formula as the CUDA kernels).
_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once, as ``model.parameters()`` yields them)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, img_size: int | tuple[int, int] = 224, batch_size: int = 1,
               inputs: Optional[torch.Tensor] = None, exclude: Iterable[str] = (),
               layer_types: tuple = LAYER_TYPES) -> dict:
    """MACs of one forward pass, per image.

    Args:
        model: any module taking (B, 3, H, W).
        img_size: H (= W) or (H, W) of the dummy input (ignored if ``inputs`` is given).
        batch_size: dummy batch size; the result is divided by it.
        inputs: an explicit input tensor instead of a dummy one.
        exclude: op-name substrings to leave out of ``kept`` (e.g. ``("bmm",)``).
        layer_types: module types whose inner work makes up the ``layers`` convention.

    Returns a dict with
        ``total``: all counted MACs; ``layers``: MACs inside ``layer_types`` modules (thop/ptflops style);
        ``kept``: total minus the ``exclude``d ops; ``by_op``: {aten op: MACs};
        ``by_module_type``: {module class name: MACs done directly inside modules of that leaf type}.
    """
    if inputs is None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        p = next(iter(model.parameters()), None)
        inputs = torch.randn(batch_size, 3, h, w, device=p.device if p is not None else "cpu",
                             dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
    b = inputs.shape[0]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            model(inputs)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    glob = counts.get("Global", {})
    by_op = {str(op): c / 2 / b for op, c in glob.items()}
    total = sum(by_op.values())
    kept = sum(v for op, v in by_op.items() if not any(e in op for e in exclude))

    # Map FlopCounterMode's module keys ("RootClass.blocks.0.attn") back to modules. Leaf modules of one
    # type never contain each other, so summing over them counts nothing twice.
    root = type(model).__name__
    modules = dict(model.named_modules())
    layers, by_type = 0.0, {}
    for key, ops in counts.items():
        if key == "Global" or not (key == root or key.startswith(root + ".")):
            continue
        name = key[len(root) + 1:] if key != root else ""
        mod = modules.get(name)
        if mod is None or any(True for _ in mod.children()):
            continue                                   # only leaves: their work is not nested further
        macs = sum(ops.values()) / 2 / b
        by_type[type(mod).__name__] = by_type.get(type(mod).__name__, 0.0) + macs
        if isinstance(mod, layer_types):
            layers += macs
    return {"total": total, "layers": layers, "kept": kept, "by_op": by_op, "by_module_type": by_type}


def summary(model: nn.Module, img_size: int | tuple[int, int] = 224, **kw) -> str:
    """One line: parameters, total MACs and layer-only (thop/ptflops-convention) MACs."""
    r = count_macs(model, img_size, **kw)
    return (f"{count_params(model) / 1e6:.3f}M params | {r['total'] / 1e9:.3f} GMACs total | "
            f"{r['layers'] / 1e9:.3f} GMACs in Linear/Conv layers (thop/ptflops convention)")

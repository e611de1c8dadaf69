"""torch.hub entry points: every model of every paper file, under the name it has in that file's `MODELS`.

    import torch
    torch.hub.list("hybrid-vision-papers/hybrid-vision-papers")                  # every name
    print(torch.hub.help("hybrid-vision-papers/hybrid-vision-papers", "lkca_t"))  # what it is
    model = torch.hub.load("hybrid-vision-papers/hybrid-vision-papers", "lkca_t", num_classes=10, img_size=32)

From a local checkout (offline): `torch.hub.load("path/to/checkout", "lkca_t", source="local", ...)`.
The keyword arguments are the factory's (`num_classes`, `img_size`, and the model's options). The models are
randomly initialised: no weights are downloaded (ConvNeXt and UniRepLKNet load their authors' checkpoints
with `load_state_dict`, see their files).

Everything not meant to be an entry point is named with a leading underscore: torch.hub lists every public
callable of this file.
"""
import importlib as _importlib
import pkgutil as _pkgutil

import papers as _papers

# What a paper file imports besides the standard library (torch.hub checks these are installed).
dependencies = ["torch", "torchvision", "einops"]


def _entry(module, name, factory):
    title = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else module.__name__
    paper = getattr(module, "PAPER_PARAMS", {}).get(name)
    count = f"The paper's parameter count: {paper / 1e6:.2f}M. " if paper else ""

    def entry(*args, **kwargs):
        return factory(*args, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__wrapped__ = factory
    entry.__doc__ = (f"{name}: from papers/{module.__name__.split('.')[-1]}.py -- {title}\n\n"
                     f"{(factory.__doc__ or '').strip()}\n\n"
                     f"{count}Keyword arguments: num_classes, img_size and the model's options; "
                     f"randomly initialised.")
    return entry


def _collect():
    entries = {}
    for info in sorted(_pkgutil.iter_modules(_papers.__path__), key=lambda m: m.name):
        module = _importlib.import_module(f"papers.{info.name}")
        for name, factory in getattr(module, "MODELS", {}).items():
            if name in entries:
                raise RuntimeError(f"model name {name!r} is defined by two paper files")
            entries[name] = _entry(module, name, factory)
    return entries


globals().update(_collect())

"""The repository's promises, checked mechanically: every paper file is copyable alone, has a MODELS dict of
factories with defaults that accept num_classes and img_size, a notebook of the same name that honours the
smoke switch, and a test file; and a paper file really works when copied alone into an empty folder."""
import ast
import glob
import inspect
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = {"torch", "torchvision", "einops", "math", "typing", "dataclasses", "functools", "itertools",
           "collections", "warnings", "__future__", "enum", "copy", "numbers", "abc", "contextlib"}
PAPERS = sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, "papers", "*.py"))
                if not f.endswith("__init__.py"))


def test_there_are_papers():
    assert "lkca" in PAPERS


@pytest.mark.parametrize("name", PAPERS)
def test_paper_file_imports_only_allowed_modules(name):
    tree = ast.parse(open(os.path.join(ROOT, "papers", f"{name}.py")).read())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert not (mods - ALLOWED), f"papers/{name}.py imports {sorted(mods - ALLOWED)}"
    assert not any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree)), "relative import"
    doc = ast.get_docstring(tree) or ""
    assert "differ" in doc.lower(), "the module docstring must list what differs from the paper/code"


@pytest.mark.parametrize("name", PAPERS)
def test_models_dict_and_factory_signatures(name):
    import importlib

    mod = importlib.import_module(f"papers.{name}")
    assert isinstance(getattr(mod, "MODELS", None), dict) and mod.MODELS, "no MODELS dict"
    for variant, factory in mod.MODELS.items():
        assert variant == variant.lower(), variant
        params = inspect.signature(factory).parameters
        accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for arg in ("num_classes", "img_size"):
            assert arg in params or accepts_kwargs, f"{variant} does not accept {arg}"
        for p in params.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                assert p.default is not p.empty, f"{variant}: argument {p.name} has no default"


@pytest.mark.parametrize("name", PAPERS)
def test_notebook_and_tests_exist_and_notebook_is_clean(name):
    nb_path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    assert os.path.exists(nb_path), f"notebooks/{name}.ipynb is missing"
    assert glob.glob(os.path.join(ROOT, "tests", f"test_{name}*.py")), f"tests/test_{name}.py is missing"
    nb = json.load(open(nb_path))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "SMOKE" in code, "the notebook must honour the smoke switch (common.smoke.SMOKE)"
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "committed notebook outputs contain an error"
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "no committed outputs"
    assert os.path.getsize(nb_path) < 5_000_000, "keep committed notebooks small"


def test_lkca_file_works_copied_alone(tmp_path):
    """Copy papers/lkca.py into an empty folder and use it from there, with the repo off sys.path."""
    import shutil

    shutil.copy(os.path.join(ROOT, "papers", "lkca.py"), tmp_path / "lkca.py")
    code = ("import torch, lkca; m = lkca.MODELS['lkca_t'](num_classes=10, img_size=32); "
            "print(tuple(m(torch.randn(2, 3, 32, 32)).shape))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 10)"

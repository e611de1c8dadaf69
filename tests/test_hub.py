"""torch.hub: every name of every paper file's MODELS is an entry point of hubconf.py, help says what it is,
load builds it; all from the local checkout (source="local"), offline."""
import importlib
import os
import pkgutil

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "hybrid-vision-papers/hybrid-vision-papers"


@pytest.fixture
def offline_github(monkeypatch):
    """torch.hub.list/help take only a GitHub "owner/repo" (no source="local"): point torch.hub's download
    step at this checkout, so the real list/help code runs offline on the files a user would download."""
    def fake(github, *args, **kwargs):
        assert github == REPO
        return ROOT
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", fake)


def _all_names():
    import papers

    names = {}
    for info in pkgutil.iter_modules(papers.__path__):
        module = importlib.import_module(f"papers.{info.name}")
        names.update({n: info.name for n in getattr(module, "MODELS", {})})
    return names


def test_list_is_exactly_every_models_name(offline_github):
    listed = torch.hub.list(REPO, trust_repo=True)
    assert sorted(listed) == sorted(_all_names()), "hubconf exposes something else than the MODELS names"


def test_help_names_the_paper_file_the_factory_doc_and_the_papers_count(offline_github):
    import papers.iianet

    names = _all_names()
    for name in ("lkca_t", "iianet", "hiri_vit_s"):
        doc = torch.hub.help(REPO, name, trust_repo=True)
        assert doc.startswith(f"{name}: from papers/{names[name]}.py"), doc[:200]
    doc = torch.hub.help(REPO, "iianet", trust_repo=True)
    assert f"{papers.iianet.PAPER_PARAMS['iianet'] / 1e6:.2f}M" in doc
    assert (papers.iianet.MODELS["iianet"].__doc__ or "").strip() in doc


def test_load_builds_the_same_model_as_the_paper_file():
    from papers.lkca import MODELS

    torch.manual_seed(0)
    hub_model = torch.hub.load(ROOT, "lkca_t", source="local", trust_repo=True, num_classes=10, img_size=32)
    torch.manual_seed(0)
    direct = MODELS["lkca_t"](num_classes=10, img_size=32)
    assert type(hub_model) is type(direct)
    sd_hub, sd_direct = hub_model.state_dict(), direct.state_dict()
    assert sd_hub.keys() == sd_direct.keys() and all(torch.equal(sd_hub[k], sd_direct[k]) for k in sd_hub)
    assert hub_model(torch.randn(2, 3, 32, 32)).shape == (2, 10)

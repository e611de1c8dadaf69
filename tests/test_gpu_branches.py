"""The notebooks' GPU recipes, rehearsed on the CPU: code nobody ran must not be the first thing a rented GPU runs.

Each notebook below has a branch that only a CUDA machine takes (real dataset, full-size model). With
``HVP_GPU_PATH_ON_CPU=1`` (common/smoke.py) the notebook takes that branch on the CPU: the same cells, the same
data-loader calls and model family, with only the sizes and steps that ``HVP_SMOKE=1`` shrinks. Here every such
notebook is executed that way (the committed .ipynb, in a fresh kernel, outputs kept in memory: the file is never
modified) on small files in the datasets' real on-disk formats (tests/fixtures.py) under ``HVP_DATA_ROOT``. The
test asserts that the notebook finished, that the GPU branch printed its marker ("data: <name> (GPU recipe)"),
that the branch's cell never mentions the embedded CPU dataset (``nearest-color``), and that no line only the CPU
branch or its fallback prints appears anywhere. (The multi-seed study cells may still run their tiny smoke arms
on ``nearest-color`` when Fashion-MNIST is not installed, as in CI: that is not the GPU branch.)

The kernel gets a ``sitecustomize.py`` (tests/fixtures.py: ``write_sitecustomize``) that accepts the CIFAR
fixture files without torchvision's md5 check (only under the fixture root) and refuses any network
connection, so a download attempt fails loudly. Token Fusion's ImageNet-pretrained ResNet-101 is taken from a
fixture file in a temporary torch hub cache (ResNet-101's real keys and shapes, constant values, 190 KB on disk
because the tensors are expanded from one element): the notebook's pretrained branch runs without a download.

On a CPU this cannot catch what only CUDA does (autocast, tensors left on the GPU). On a CUDA machine the same
test runs the branches on the GPU, against the same fixtures (``HVP_GPU_PATH_ON_CPU=1`` then means "GPU recipe,
no downloads, even in smoke mode"): that is the device check to run when a GPU is available.
"""
import importlib
import os
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import write_all, write_sitecustomize  # noqa: E402  (tests/fixtures.py)

# notebook -> (the line its GPU branch prints, lines that only its CPU branch or its fallback print)
GPU_NOTEBOOKS = {
    "lkca": ("data: cifar10 (GPU recipe)", ("data nearest-color", "could not load cifar10")),
    "iianet": ("data: pets (GPU recipe)", ("'name': 'nearest-color'",)),
    "hiri_vit": ("data: imagenette (GPU recipe)", ("nearest-color at 32px", "no Imagenette in")),
    "token_fusion": ("data: imagenette (GPU recipe)", ("nearest-color 32px", "Imagenette unavailable")),
}
CELL_TIMEOUT = 600


def write_resnet101_weights(torch_home):
    """A stand-in for torchvision's ResNet101_Weights.IMAGENET1K_V2 file, where torch.hub looks for it
    (TORCH_HOME/hub/checkpoints/resnet101-cd907fc2.pth): the real keys and shapes, constant values."""
    import torch
    import torchvision

    with torch.device("meta"):
        sd = torchvision.models.resnet101().state_dict()

    def const(k, v):
        value = 1.0 if k.endswith("running_var") else (0.01 if v.is_floating_point() else 0)
        return torch.full((), value, dtype=v.dtype).expand(v.shape)     # one element of storage on disk

    url = torchvision.models.ResNet101_Weights.IMAGENET1K_V2.url
    d = os.path.join(torch_home, "hub", "checkpoints")
    os.makedirs(d, exist_ok=True)
    torch.save({k: const(k, v) for k, v in sd.items()}, os.path.join(d, os.path.basename(url)))


@pytest.fixture(scope="module")
def gpu_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu_branches")
    data = write_all(str(base / "data"))
    site = write_sitecustomize(str(base / "site"), data)
    write_resnet101_weights(str(base / "torch"))
    return dict(data=data, site=site, torch_home=str(base / "torch"))


def _cell_texts(nb):
    """Per code cell, its stream, text/plain and error outputs as one string."""
    texts = []
    for cell in nb.cells:
        parts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
        texts.append("\n".join(parts))
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GPU_NOTEBOOKS))
def test_gpu_branch_runs_on_cpu(name, gpu_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HVP_SMOKE", "1")
    monkeypatch.setenv("HVP_GPU_PATH_ON_CPU", "1")
    monkeypatch.setenv("HVP_DATA_ROOT", gpu_env["data"])
    monkeypatch.setenv("TORCH_HOME", gpu_env["torch_home"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([gpu_env["site"], ROOT] + (
        [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    t = time.time()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))            # no terminal colours in the report
        pytest.fail(f"notebooks/{name}.ipynb crashed on its GPU branch (HVP_GPU_PATH_ON_CPU=1):\n{msg[-4000:]}")
    finally:
        nbformat.write(nb, str(tmp_path / f"{name}.ipynb"))   # the executed copy, to look at after a failure
    cells = _cell_texts(nb)
    text = "\n".join(cells)
    print(f"{name}: {time.time() - t:.0f}s (executed copy: {tmp_path / f'{name}.ipynb'})")
    marker, cpu_lines = GPU_NOTEBOOKS[name]
    branch = [c for c in cells if marker in c]
    assert branch, (f"notebooks/{name}.ipynb did not take its GPU branch (no line {marker!r} in its "
                    f"outputs):\n{text[-3000:]}")
    # The embedded CPU task must not show up in the GPU branch's cell, nor any CPU-branch/fallback line anywhere.
    # (Elsewhere "nearest-color" may appear legitimately: a smoke study falls back to it without Fashion-MNIST.)
    assert "nearest-color" not in branch[0], f"the GPU branch used the embedded CPU task:\n{branch[0]}"
    for line in cpu_lines:
        assert line not in text, f"notebooks/{name}.ipynb printed {line!r} (CPU branch / fallback):\n{text[-3000:]}"
    if name == "token_fusion":   # the pretrained branch ran, from the fixture file (no download)
        assert "ResNet-101: ImageNet-pretrained weights from" in text, text[-3000:]


def test_switches(monkeypatch, tmp_path):
    """common/smoke.py: the rehearsal switch turns the GPU path on and downloads off; smoke mode alone keeps the
    embedded data (on a CUDA machine too); HVP_DATA_ROOT overrides the repository's data/ folder."""
    import common.smoke as S

    try:
        for smoke, on_cpu, want_path in (("1", "0", False), ("1", "1", True), ("0", "1", True)):
            monkeypatch.setenv("HVP_SMOKE", smoke)
            monkeypatch.setenv("HVP_GPU_PATH_ON_CPU", on_cpu)
            monkeypatch.delenv("HVP_DATA_ROOT", raising=False)
            importlib.reload(S)
            cuda = S.torch.cuda.is_available()
            assert S.GPU_PATH == (want_path or (cuda and smoke == "0")), (smoke, on_cpu)
            assert S.ALLOW_DOWNLOAD == (on_cpu == "0")
            assert S.DATA_ROOT == os.path.join(ROOT, "data")
        monkeypatch.setenv("HVP_DATA_ROOT", str(tmp_path))
        importlib.reload(S)
        assert S.DATA_ROOT == str(tmp_path)
    finally:
        monkeypatch.undo()
        importlib.reload(S)


def test_sitecustomize_guards(gpu_env):
    """The kernel's sitecustomize: CIFAR fixture files load without their md5 sums only under the fixture root
    (a copy elsewhere is still refused, as in production), and a download attempt fails at once."""
    outside = os.path.join(os.path.dirname(gpu_env["data"]), "elsewhere")
    import shutil
    shutil.copytree(os.path.join(gpu_env["data"], "cifar-10-batches-py"), os.path.join(outside, "cifar-10-batches-py"),
                    dirs_exist_ok=True)
    code = f"""
import torchvision.datasets as tvd, urllib.request
print("fixture", len(tvd.CIFAR10({gpu_env["data"]!r}, train=True)))
try:
    tvd.CIFAR10({outside!r}, train=True)
except RuntimeError as e:
    print("elsewhere refused:", e)
try:
    urllib.request.urlopen("https://download.pytorch.org/models/resnet101-cd907fc2.pth", timeout=5)
except OSError as e:
    print("network refused:", e)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([gpu_env["site"], ROOT]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fixture 40" in out.stdout, out.stdout
    assert "elsewhere refused: Dataset not found or corrupted" in out.stdout, out.stdout
    assert "network refused:" in out.stdout and "no network in this test" in out.stdout, out.stdout

"""The single smoke switch, and the switch that rehearses the notebooks' GPU recipes on a CPU.

`HVP_SMOKE=1` makes every notebook (and `python -m common.train --smoke`) run a few steps on tiny data so
that CI can execute them in about a minute on a CPU. `pytest` turns it on for the notebooks it runs
(see tests/conftest.py) unless you set the variable yourself, e.g. `HVP_SMOKE=0 pytest notebooks/` to run
the notebooks for real.

`HVP_GPU_PATH_ON_CPU=1` makes a notebook take its **GPU recipe** (real dataset, full-size model) even without
CUDA: the same cells, data-loader calls and model family, on whatever device there is (the CPU here), with
only the sizes and steps that smoke mode shrinks. tests/test_gpu_branches.py runs each notebook so, in smoke
mode, on small files in the datasets' real on-disk formats (tests/fixtures.py), so that the first run on a
rented GPU does not crash on code nobody executed. Under it nothing is downloaded (``ALLOW_DOWNLOAD``): a
missing dataset is an error naming the layout expected. CUDA-only calls (autocast, ``torch.cuda.synchronize``)
stay guarded by the real device type, so the rehearsal never calls a CUDA API. On a CUDA machine the same
variable runs the GPU recipe on the GPU, downloads off, even in smoke mode: `HVP_GPU_PATH_ON_CPU=1 pytest
tests/test_gpu_branches.py` there is the quick check that the CUDA-only parts work too.

`HVP_DATA_ROOT` is where the notebooks look for real datasets (default: the repository's ``data/`` folder,
whatever the working directory).
"""
import os

import torch

_TRUE = {"1", "true", "yes", "on"}

ENV_VAR = "HVP_SMOKE"
SMOKE: bool = os.environ.get(ENV_VAR, "0").strip().lower() in _TRUE

GPU_PATH_ENV_VAR = "HVP_GPU_PATH_ON_CPU"
GPU_PATH_ON_CPU: bool = os.environ.get(GPU_PATH_ENV_VAR, "0").strip().lower() in _TRUE
# Take the GPU recipe: on a CUDA machine in a real (non-smoke) run, or whenever the rehearsal is asked for.
# (A smoke run on a CUDA machine without the rehearsal keeps the embedded data: CI never downloads.)
GPU_PATH: bool = (torch.cuda.is_available() and not SMOKE) or GPU_PATH_ON_CPU
# The GPU recipes may fetch a missing dataset / pretrained weights, except in the rehearsal.
ALLOW_DOWNLOAD: bool = not GPU_PATH_ON_CPU

DATA_ROOT_ENV_VAR = "HVP_DATA_ROOT"
DATA_ROOT: str = os.environ.get(DATA_ROOT_ENV_VAR) or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")

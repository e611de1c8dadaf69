"""The single smoke switch.

`HVP_SMOKE=1` makes every notebook (and `python -m common.train --smoke`) run a few steps on tiny data so
that CI can execute them in about a minute on a CPU. `pytest` turns it on for the notebooks it runs
(see tests/conftest.py) unless you set the variable yourself, e.g. `HVP_SMOKE=0 pytest notebooks/` to run
the notebooks for real.
"""
import os

ENV_VAR = "HVP_SMOKE"
SMOKE: bool = os.environ.get(ENV_VAR, "0").strip().lower() in {"1", "true", "yes", "on"}

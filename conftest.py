import os
import sys

# The repository root on sys.path, so `import papers.lkca` / `import common` work from any directory.
ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Notebooks run by pytest (nbval) are in smoke mode unless the caller chose otherwise. The nbval kernel
# inherits this process's environment, so setting it here reaches the notebooks.
os.environ.setdefault("HVP_SMOKE", "1")
# Keep the CPU runs polite and reproducible on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

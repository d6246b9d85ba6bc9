"""main.py that first calls a function of tests/helpers.py: the one SETUP_HOOK names, in this process
(scripted validation scores), or the one WORKER_SETUP_HOOK names, in each of its Ray workers (a NaN
loss, a results folder a worker cannot write).

    WORKER_SETUP_HOOK=helpers.nan_loss PYTHONPATH=.:tests python tests/with_worker_hook.py [main.py flags]
"""
import importlib
import os
import sys

from dendritic_experiment import cluster, main

if __name__ == "__main__":
    if hook := os.environ.get("SETUP_HOOK"):
        module, function = hook.rsplit(".", 1)
        getattr(importlib.import_module(module), function)()
    cluster.WORKER_SETUP_HOOK = os.environ.get("WORKER_SETUP_HOOK", "")
    sys.exit(main.cli(sys.argv[1:]))

"""main.py whose Ray workers first call the function that the environment variable WORKER_SETUP_HOOK
names (tests/helpers.py has them: a NaN loss, a results folder a worker cannot write).

    WORKER_SETUP_HOOK=helpers.nan_loss PYTHONPATH=.:tests python tests/with_worker_hook.py [main.py flags]
"""
import os
import sys

from dendritic_experiment import cluster, main

if __name__ == "__main__":
    cluster.WORKER_SETUP_HOOK = os.environ["WORKER_SETUP_HOOK"]
    sys.exit(main.cli(sys.argv[1:]))

"""Tiny stand-ins for the ResNets, so that tests train in seconds.

    PYTHONPATH=. python tests/tiny_models.py [main.py flags]   # main.py, tiny models
    TINY_WIDTHS=16,32,64,128 PYTHONPATH=...                                        # twice as wide

With --parallel-runs, every Ray worker puts the tiny models in place too (use_tiny_models), and
the environment variable WORKER_SETUP_HOOK may name another function for the workers to call.
"""
import os
import sys

from dendritic_experiment.models import Bottleneck, ResNet

WIDTHS = tuple(int(width) for width in os.environ.get("TINY_WIDTHS", "8,16,32,64").split(","))
TINY = {
    "resnet18": lambda num_classes: ResNet([2, 2, 2, 2], num_classes, WIDTHS),
    "resnet34": lambda num_classes: ResNet([3, 4, 6, 3], num_classes, WIDTHS),
    "resnet50": lambda num_classes: ResNet([2, 2, 2, 2], num_classes, (4, 8, 16, 32), block=Bottleneck),
}



def use_tiny_models():
    from dendritic_experiment import models

    models.MODELS.update(TINY)


if __name__ == "__main__":
    from dendritic_experiment import cluster, main

    use_tiny_models()
    cluster.WORKER_SETUP_HOOK = os.environ.get("WORKER_SETUP_HOOK", "tiny_models.use_tiny_models")
    sys.exit(main.cli(sys.argv[1:]))

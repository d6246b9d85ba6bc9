"""Tiny stand-ins for the ResNets, so that tests train in seconds.

    PYTHONPATH=dendritic_experiment python tests/tiny_models.py [main.py flags]   # main.py, tiny models
"""
import sys

from models import Bottleneck, ResNet

WIDTHS = (8, 16, 32, 64)
TINY = {
    "resnet18": lambda num_classes: ResNet([2, 2, 2, 2], num_classes, WIDTHS),
    "resnet34": lambda num_classes: ResNet([3, 4, 6, 3], num_classes, WIDTHS),
    "resnet50": lambda num_classes: ResNet([2, 2, 2, 2], num_classes, (4, 8, 16, 32), block=Bottleneck),
}

if __name__ == "__main__":
    import main
    import models

    models.MODELS.update(TINY)
    sys.exit(main.cli(sys.argv[1:]))

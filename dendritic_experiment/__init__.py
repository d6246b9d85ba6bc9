"""Does a ResNet-18 with perforatedai dendrites reach a ResNet-34 on CIFAR-100? The method: docs/method.md; the
modules, one subject each, and the tools in tests/ that measure the project itself: README.md's "Layout".

    python dendritic_experiment/main.py     # or: python -m dendritic_experiment
"""

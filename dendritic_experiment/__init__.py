"""Does a ResNet-18 with perforatedai dendrites reach a ResNet-34 on CIFAR-100? The method: docs/method.md.

    python dendritic_experiment/main.py     # or: python -m dendritic_experiment

Modules, one subject each: README.md's "Layout". The tools that measure the project itself (the
study, the GPU check, the benchmark, the latency table) live in tests/.
"""

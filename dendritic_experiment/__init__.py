"""Does a ResNet-18 with perforatedai dendrites reach a ResNet-34 on CIFAR-100? The method: docs/method.md.

    python dendritic_experiment/main.py     # or: python -m dendritic_experiment

Modules, one subject each: config (every setting), settings (flags and checks), experiment (the
plan: which runs, cached or trained), runs (the three kinds of run and their epoch loop), train
(the step, an epoch, evaluation), data, models, dendrites (the one place that knows perforatedai),
contribution (what dendrites add), report and intervals (the comparison), cluster (Ray), predict,
plain_model and export (a finished run without perforatedai), latency, utils. Developer tools that
measure the project itself (benchmark, projection, the latency table, the study) live in tests/.
"""

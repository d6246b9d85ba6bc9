"""Shared fixtures: a tiny CIFAR-100 folder in the real pickle format, and tiny ResNets."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dendritic_experiment")
sys.path.insert(0, PACKAGE)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_cifar import write_fake_cifar100  # noqa: E402
import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """1,000 training and 200 test images of 100 colour-coded classes."""
    directory = tmp_path_factory.mktemp("data")
    write_fake_cifar100(directory, train=1000, test=200)
    return str(directory)


@pytest.fixture
def tiny(monkeypatch):
    """resnet18 / resnet34 become ResNets of a few thousand parameters, for fast runs."""
    import models
    for name, factory in tiny_models.TINY.items():
        monkeypatch.setitem(models.MODELS, name, factory)


def run_main(args, cwd, tiny_models_on=True, timeout=600):
    """main.py in a real process with stdin closed, as CI and nohup run it."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_models.py")
    command = [sys.executable, script if tiny_models_on else os.path.join(PACKAGE, "main.py"), *args]
    return subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)

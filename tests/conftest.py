"""Shared fixtures: a tiny CIFAR-100 folder in the real pickle format, and tiny ResNets."""
import pytest

import tiny_models
from fake_cifar import write_fake_cifar100


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

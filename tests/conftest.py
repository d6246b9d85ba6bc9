"""Shared fixtures: a tiny CIFAR-100 folder in the real pickle format, and tiny ResNets."""
import pytest

from fake_cifar import write_fake_cifar100
from helpers import TINY_WIDTH


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """1,000 training and 200 test images of 100 colour-coded classes."""
    directory = tmp_path_factory.mktemp("data")
    write_fake_cifar100(directory, train=1000, test=200)
    return str(directory)


@pytest.fixture
def tiny(monkeypatch):
    """config.py's width becomes TINY_WIDTH: the real networks with 1/8 of their channels (ResNet-18:
    182,252 parameters), for fast runs in this process."""
    from dendritic_experiment import config

    monkeypatch.setattr(config, "width", TINY_WIDTH)


@pytest.fixture
def new_tracker(tiny, tmp_path):
    """new_tracker(*flags): a DendriteTracker around a tiny ResNet-18 (its auto modules), released
    after the test."""
    from dendritic_experiment.dendrites import DendriteTracker
    from dendritic_experiment.models import build_model, dendrite_modules_of
    from dendritic_experiment.settings import parse_settings

    made = []

    def make(*flags):
        tracker = DendriteTracker(build_model("resnet18", width=TINY_WIDTH), dendrite_modules_of("resnet18", "auto"),
                                  parse_settings(list(flags)), str(tmp_path / f"run{len(made)}"), "cpu")
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()


@pytest.fixture(autouse=True)
def no_tracker_left_live():
    """perforatedai allows one live tracker per process: every run and test must release its own."""
    from dendritic_experiment.dendrites import DendriteTracker

    yield
    left, DendriteTracker.live = DendriteTracker.live, None
    assert left is None, f"a tracker was left live (for {left.run_dir})"


@pytest.fixture(scope="session")
def gpu_check_dry_run(tmp_path_factory):
    """tests/gpu_check.sh --dry-run, run once: (the finished process, its $OUT folder, the files it
    added to or removed from the repository). Its benchmark stage is benchmark.py's quick run,
    which test_benchmark.py reads too."""
    import os
    import subprocess

    from helpers import ROOT, TESTS, repository_files

    out = tmp_path_factory.mktemp("gpu_check") / "out"
    before = repository_files()
    finished = subprocess.run(["bash", os.path.join(TESTS, "gpu_check.sh"), "--dry-run"], cwd=ROOT,
                              env=dict(os.environ, OUT=str(out)), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=900)
    return finished, out, repository_files() ^ before

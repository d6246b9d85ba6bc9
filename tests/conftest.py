"""Shared fixtures: a tiny CIFAR-100 folder in the real pickle format, and tiny ResNets."""
import os

# pytest.ini runs the tests in two processes (pytest-xdist), so each torch, and every process it starts,
# gets one thread: two each oversubscribed a 2-core machine (suite 12m47s against 6m00s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fcntl  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from fake_cifar import write_fake_cifar100
from helpers import TINY_WIDTH, run_main


# The files whose tests take longest, first (seconds on the 2-core machine, 2026-12-07, summed over each
# file's tests: 150, 142, 86, 72, 72, 70, 64, 60, 41, 29, 28, 24; the whole suite 895 test-seconds in 7m40s
# on two processes). pytest-xdist hands out whole files (pytest.ini), each to the process that is free
# first: longest first, the two processes end within seconds of each other.
LONGEST_FIRST = ("test_gpu_check.py", "test_parallel.py", "test_resume.py", "test_tracking.py", "test_control.py",
                 "test_train.py", "test_comparison.py", "test_identity.py", "test_failures.py", "test_extras.py",
                 "test_predict.py", "test_main.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """1,000 training and 200 test images of 100 colour-coded classes."""
    directory = tmp_path_factory.mktemp("data")
    write_fake_cifar100(directory, train=1000, test=200)
    return str(directory)


@pytest.fixture(scope="session")
def trained_once(data_dir, tmp_path_factory):
    """trained_once(name, flags, **environment) -> the folder of main.py run with flags (tiny ResNets,
    the tiny data, umask 022; its results in results/, its output in stdout and stderr), trained once
    for the whole suite: the first test process to ask trains it, under a lock, and the other reuses
    it (the same data in another folder: the same fingerprint). A test copies what it changes
    (helpers.copy_results)."""
    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a test process's folder is in the session's: one for both
        session = session.parent
    shared = session / "trained_once"  # never the parent of a one-process session's: it holds every session's
    shared.mkdir(exist_ok=True)

    def results(name, flags, **environment):
        folder = shared / name
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
            asked = json.dumps([flags, environment])  # a name stands for one set of flags, in every test
            if (folder / "finished").exists():
                assert (folder / "finished").read_text() == asked, f"trained_once({name!r}) asked with other flags"
            else:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                previous = os.umask(0o022)
                try:
                    process = run_main(["--data-dir", data_dir, "--results-dir", "results", *flags], cwd=folder,
                                       **environment)
                finally:
                    os.umask(previous)
                assert process.returncode == 0, process.stderr
                (folder / "stdout").write_text(process.stdout)
                (folder / "stderr").write_text(process.stderr)
                (folder / "finished").write_text(asked)
        return folder

    return results


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

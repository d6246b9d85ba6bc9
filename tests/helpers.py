"""What several test files use: the package's path, main.py in a real process, a run's history."""
import os
import subprocess
import sys

from utils import read_csv

TESTS = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(TESTS), "dendritic_experiment")
TINY_MAIN = os.path.join(TESTS, "tiny_models.py")  # main.py with tiny stand-ins for the ResNets


def script_environment():
    """A subprocess's environment in which tests/ and the package import as they do under pytest."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE, TESTS, os.environ.get("PYTHONPATH", "")]))


def main_command(args, tiny_models_on=True):
    return [sys.executable, TINY_MAIN if tiny_models_on else os.path.join(PACKAGE, "main.py"), *args]


def run_main(args, cwd, tiny_models_on=True, timeout=600):
    """main.py in a real process with stdin closed, as CI and nohup run it."""
    return subprocess.run(main_command(args, tiny_models_on), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=script_environment())


def read_history(run_dir):
    return read_csv(os.path.join(run_dir, "history.csv"))

"""--parallel-runs: runs as Ray tasks on a local Ray (on the CPU here), against one after the other."""
import contextlib
import os
import signal
import subprocess
import sys
import time

import torch

from helpers import HALF_THE_CORES, SMOKE, assert_same_run, main_command, read_history, run_main, script_environment

RUNS = ("resnet18", "resnet34", "resnet18_dendritic", "resnet18_continued")


@contextlib.contextmanager
def ended_on_exit(driver):
    """The driver (main.py with --parallel-runs) and its Ray ended however the test ends, failed or
    timed out: starting Ray makes the driver a process-group leader (Ray's services.py), so its group
    holds Ray's processes."""
    try:
        yield driver
    finally:
        for kill in (lambda: os.killpg(driver.pid, signal.SIGKILL), driver.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill()
        driver.wait()


def ray_main(args, cwd, timeout=600, **environment):
    """main.py in a real process, as helpers.run_main, but ended with its Ray even when the test fails."""
    driver = subprocess.Popen(main_command(args, environment.get("WORKER_SETUP_HOOK")), cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(script_environment(), **environment))
    with ended_on_exit(driver):
        stdout, stderr = driver.communicate(timeout=timeout)
    return subprocess.CompletedProcess(driver.args, driver.returncode, stdout, stderr)


def test_two_runs_at_once_end_exactly_as_one_after_the_other(trained_once, data_dir, tmp_path):
    flags = [*SMOKE, "--data-dir", data_dir]
    one_by_one = trained_once("smoke", SMOKE, **HALF_THE_CORES)  # test_main.py's, trained once for both
    at_once = ray_main(flags + ["--results-dir", "at_once", "--parallel-runs", "2"], cwd=tmp_path)
    assert at_once.returncode == 0, at_once.stderr
    for run in RUNS:
        first, second = one_by_one / "results" / "smoke" / run, tmp_path / "at_once" / "smoke" / run
        assert_same_run(first, second)
        predictions = [torch.load(d / "test_predictions.pt", weights_only=True) for d in (first, second)]
        assert all(torch.equal(predictions[0][key], predictions[1][key]) for key in predictions[0])
        assert f"{run} (seed 0): started on" in at_once.stderr  # each in a worker, which says where
    assert "4/4 runs done" in at_once.stderr and "4/4 runs done" in (one_by_one / "stderr").read_text()
    again = ray_main(flags + ["--results-dir", "at_once", "--parallel-runs", "2"], cwd=tmp_path)
    assert again.returncode == 0 and again.stderr.count("reusing") == 4 and "started on" not in again.stderr


def test_a_killed_worker_is_retried_and_its_run_resumes_from_its_checkpoint(data_dir, tmp_path):
    flags = ["--data-dir", data_dir, "--experiments", "resnet18", "--seeds", "0", "--epochs", "5", "--val-split", "200",
             "--batch-size", "100", "--warmup-epochs", "1", "--checkpoint-seconds", "0"]
    assert run_main(flags + ["--results-dir", "straight"], cwd=tmp_path, **HALF_THE_CORES).returncode == 0
    run_dir = tmp_path / "killed" / "resnet18"
    driver = subprocess.Popen(main_command(flags + ["--results-dir", "killed", "--parallel-runs", "2"]), cwd=tmp_path,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=script_environment())
    with ended_on_exit(driver):
        deadline = time.time() + 300
        while time.time() < deadline and not ((run_dir / "history.csv").exists() and len(read_history(run_dir)) >= 3):
            time.sleep(0.05)
        worker = int((run_dir / ".train.lock").read_text())
        assert worker != driver.pid
        os.kill(worker, signal.SIGKILL)
        _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    assert "resnet18: resuming after epoch" in stderr  # a new worker, from the checkpoint
    assert_same_run(tmp_path / "straight" / "resnet18", run_dir)


def test_a_run_that_fails_for_its_own_reason_is_not_retried_and_its_error_reaches_the_terminal(data_dir, tmp_path):
    process = ray_main(["--data-dir", data_dir, "--results-dir", "out", "--experiments", "resnet18,resnet34",
                        "--seeds", "0", "--epochs", "1", "--warmup-epochs", "0", "--val-split", "200",
                        "--batch-size", "100", "--parallel-runs", "2"], cwd=tmp_path, WORKER_SETUP_HOOK="helpers.nan_loss")
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines()[-1].startswith("error: 2 runs failed; first: resnet")
    for run in ("resnet18", "resnet34"):
        assert process.stderr.count(f"{run} (seed 0): started on") == 1  # not retried
        assert f"failed: {run}: the training loss became nan at epoch 1, step 1" in process.stderr


def test_a_results_folder_a_worker_cannot_write_is_refused_before_training(data_dir, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    process = ray_main(["--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0", "--parallel-runs", "2"],
                       cwd=tmp_path, WORKER_SETUP_HOOK="helpers.read_only_folder", READ_ONLY_FOLDER=str(results))
    assert process.returncode == 2, process.stderr
    error = process.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --results-dir {results}: every Ray worker must be able to write it") and \
        "cannot write there (Read-only file system)" in error
    assert sorted(os.listdir(results)) == [".lock"]  # nothing trained


def test_without_parallel_runs_nothing_imports_ray(data_dir, tmp_path):
    """In a process of its own: whatever other tests imported before cannot hide an import."""
    flags = ["--width", "0.125", "--data-dir", data_dir, "--results-dir", str(tmp_path), "--experiments", "resnet18",
             "--seeds", "0", "--epochs", "1", "--warmup-epochs", "0", "--val-split", "200", "--batch-size", "100"]
    check = (f"import sys; from dendritic_experiment import main; main.main({flags!r}); "
             "print(sorted(name for name in ('ray', 'dendritic_experiment.cluster') if name in sys.modules))")
    process = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=300, env=script_environment())
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().splitlines()[-1] == "[]"


def test_parallel_runs_without_ray_installed_are_refused(monkeypatch, tmp_path, capsys):
    from dendritic_experiment import main, settings

    monkeypatch.setattr(settings, "installed", lambda module: module != "ray")
    assert main.cli(["--parallel-runs", "2", "--results-dir", str(tmp_path)]) == 2
    assert "--parallel-runs 2 is not allowed: Ray is not installed: pip install ray" in capsys.readouterr().err

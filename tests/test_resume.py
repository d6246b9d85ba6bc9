"""Kill main.py with SIGKILL mid-run, run it again: it must finish exactly as if never killed."""
import os
import shutil
import signal
import subprocess
import time

import torch

from helpers import assert_same_run, main_command, read_history, run_main, script_environment

CHECKPOINT_EVERY_EPOCH = ["--seeds", "0", "--val-split", "200", "--batch-size", "100", "--warmup-epochs", "1",
                          "--checkpoint-seconds", "0"]


def kill_after_epochs(args, cwd, history_path, epochs, timeout=300):
    """Start main.py (tiny models) and SIGKILL it once history.csv shows `epochs` finished epochs."""
    process = subprocess.Popen(main_command(args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=script_environment())
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(history_path) and len(read_history(os.path.dirname(history_path))) >= epochs:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_baseline_resumes_to_the_same_result(data_dir, tmp_path):
    args = ["--data-dir", data_dir, "--experiments", "resnet18", "--epochs", "5", *CHECKPOINT_EVERY_EPOCH]
    assert run_main(args + ["--results-dir", "straight"], cwd=tmp_path).returncode == 0
    killed = tmp_path / "killed"
    kill_after_epochs(args + ["--results-dir", str(killed)], tmp_path, killed / "resnet18" / "history.csv", 3)
    assert (killed / "resnet18" / "checkpoint.pt").exists() and not (killed / "resnet18" / "result.json").exists()

    again = run_main(args + ["--results-dir", str(killed)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resnet18: resuming after epoch" in again.stderr
    assert_same_run(tmp_path / "straight" / "resnet18", killed / "resnet18")
    weights = [torch.load(d / "resnet18" / "model.pt", weights_only=True) for d in (tmp_path / "straight", killed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_killed_dendritic_run_resumes_with_its_dendrites_and_tracker(data_dir, tmp_path):
    args = ["--data-dir", data_dir, "--experiments", "resnet18,resnet18_dendritic", "--epochs", "2",
            "--dendrite-epochs", "2", "--max-dendrites", "3", *CHECKPOINT_EVERY_EPOCH]
    straight = run_main(args + ["--results-dir", "straight"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "straight" / "resnet18", killed / "resnet18")  # the same finished baseline
    kill_after_epochs(args + ["--results-dir", str(killed)], tmp_path,
                      killed / "resnet18_dendritic" / "history.csv", 3)

    again = run_main(args + ["--results-dir", str(killed)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resnet18: reusing" in again.stderr and "resnet18_dendritic: resuming after epoch" in again.stderr
    assert_same_run(tmp_path / "straight" / "resnet18_dendritic", killed / "resnet18_dendritic")


def test_killed_control_resumes_to_the_same_result(data_dir, tmp_path):
    args = ["--data-dir", data_dir, "--experiments", "resnet18,resnet18_dendritic", "--epochs", "2",
            "--dendrite-epochs", "4", "--max-dendrites", "1", "--dendrite-min-gain", "0", *CHECKPOINT_EVERY_EPOCH]
    straight = run_main(args + ["--results-dir", "straight"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    for run in ("resnet18", "resnet18_dendritic"):  # the same finished runs it starts from
        shutil.copytree(tmp_path / "straight" / run, killed / run)
    kill_after_epochs(args + ["--results-dir", str(killed)], tmp_path, killed / "resnet18_continued" / "history.csv", 2)

    again = run_main(args + ["--results-dir", str(killed)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resnet18_continued: resuming after epoch" in again.stderr
    assert_same_run(tmp_path / "straight" / "resnet18_continued", killed / "resnet18_continued")

"""Bad input and things that go wrong: one clear line, exit status 2, nothing finished is lost."""
import json
import subprocess
import sys

import pytest
import torch

from dendritic_experiment import main, train

TWO_EPOCH_BASELINE = ["--seeds", "0", "--val-split", "200", "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "100",
                      "--experiments", "resnet18"]


@pytest.fixture
def run(tiny, data_dir, tmp_path):
    """main.cli on tiny models, one run of 2 epochs; returns the exit status."""
    def run_cli(*flags):
        return main.cli(["--data-dir", data_dir, "--results-dir", str(tmp_path / "results"), *TWO_EPOCH_BASELINE, *flags])
    return run_cli


def finished_at(tmp_path):
    return json.loads((tmp_path / "results" / "resnet18" / "result.json").read_text())["finished_at"]


@pytest.mark.parametrize("name, damage", [("result.json", b'{"name": "resn'), ("model.pt", b"\x00" * 100),
                                          ("test_predictions.pt", b"")])
def test_unreadable_cached_run_is_reported_and_trained_again(run, tmp_path, capsys, name, damage):
    assert run() == 0
    first = finished_at(tmp_path)
    (tmp_path / "results" / "resnet18" / name).write_bytes(damage)
    capsys.readouterr()
    assert run() == 0
    assert "reusing" not in capsys.readouterr().err
    assert finished_at(tmp_path) != first
    torch.load(tmp_path / "results" / "resnet18" / "model.pt", weights_only=True)  # whole again


def test_unreadable_checkpoint_is_reported_and_the_run_starts_over(run, tmp_path, capsys):
    run_dir = tmp_path / "results" / "resnet18"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"truncated")
    (run_dir / ".tmp-k1ll3d").write_bytes(b"half a checkpoint")  # what a kill during a write leaves
    assert run() == 0
    assert "checkpoint.pt cannot be read" in capsys.readouterr().err
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / ".tmp-k1ll3d").exists()


@pytest.mark.parametrize("every, kept", [(0, "its checkpoint of epoch 1 is kept, and resumes it only with these settings"),
                                         (3600, "no checkpoint was saved")])
def test_nan_loss_stops_the_run_naming_epoch_step_and_what_is_kept(run, tmp_path, capsys, monkeypatch, every, kept):
    real_step, calls = train.training_step, []

    def step_that_breaks_in_epoch_two(*args):
        calls.append(1)
        loss, logits = real_step(*args)
        return (loss * float("nan"), logits) if len(calls) == 8 + 3 else (loss, logits)  # 8 steps per epoch

    monkeypatch.setattr(train, "training_step", step_that_breaks_in_epoch_two)
    assert run("--checkpoint-seconds", str(every)) == 2
    error = capsys.readouterr().err
    assert "the training loss became nan at epoch 2, step 3" in error and kept in error
    assert error.splitlines()[-1].endswith("A lower --lr (now 0.1) trains the run again from its start")  # fp32 already
    path = tmp_path / "results" / "resnet18" / "checkpoint.pt"
    if every == 0:
        assert torch.load(path, weights_only=True)["epoch"] == 1
    else:  # the first epoch took less than an hour: no checkpoint was due yet
        assert not path.exists()
    assert not (tmp_path / "results" / "resnet18" / "result.json").exists()
    if every == 0:  # the advice is true: a lower --lr starts over, the same settings resume
        monkeypatch.setattr(train, "training_step", real_step)
        saved = path.read_bytes()
        assert run("--checkpoint-seconds", "0", "--lr", "0.05") == 0
        assert "the checkpoint is from other settings; training from the start" in capsys.readouterr().err
        path.write_bytes(saved)
        assert run("--checkpoint-seconds", "0") == 0
        assert "resnet18: resuming after epoch 1" in capsys.readouterr().err


def test_out_of_memory_names_the_batch_size(run, capsys, monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(train, "training_step", out_of_memory)
    assert run() == 2
    assert "out of cpu memory at --batch-size 100; try --batch-size 50" in capsys.readouterr().err


def test_a_second_run_on_the_same_results_is_refused_and_a_stale_lock_is_not(run, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('locked', flush=True); time.sleep(60)",
         str(results / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run() == 2
        assert "another main.py (pid 4242) is using" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert (results / ".lock").exists()  # left behind by the killed process: does not block
    assert run() == 0


def test_results_dir_that_cannot_be_written_is_refused(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main.cli(["--results-dir", str(tmp_path / "a_file" / "results")]) == 2
    assert "--results-dir" in capsys.readouterr().err

"""--wandb-project with the real wandb client, offline (WANDB_MODE=offline: no account, no network):
each experiment's record is read back from the file wandb wrote."""
import contextlib
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import time

import pytest

from dendritic_experiment import main
from dendritic_experiment.experiment import plan_runs
from dendritic_experiment.settings import parse_settings
from dendritic_experiment.tracking import DENDRITIC_VAL, SWEEP_METRIC

from helpers import PACKAGE, TINY_WIDTH, main_command, script_environment

wandb = pytest.importorskip("wandb", reason="wandb is not installed: README's test command installs it")

FLAGS = ["--seeds", "0,1", "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100",
         "--experiments", "resnet18,resnet34,resnet18_dendritic", "--dendrite-epochs", "2", "--max-dendrites", "1",
         "--wandb-project", "p"]


def records(path):
    """The records of a wandb run file: a 7-byte header (':W&B', magic, version), then LevelDB's log
    format (32 KiB blocks of chunks, each a 7-byte header: crc, length, type 1 whole, 2 first, 3
    middle, 4 last), each record a wandb Record protobuf."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        _, length, kind = struct.unpack("<IHB", data[position:position + 7]) if left_in_block >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of a block too short for a header, or its zero padding
            position += left_in_block
            continue
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def name(item):
    """A logged value's key: wandb keeps one with slashes either whole or split into nested_key."""
    return item.key or "/".join(item.nested_key)


def finished_records(path, timeout=60):
    """The records of a wandb run file once its last, the exit record, is in: wandb's service process
    writes the file, and can still be writing it when run.finish() has returned (a run read at once
    then lacked its last summary keys, now and then)."""
    deadline = time.time() + timeout
    while True:
        try:
            written = list(records(path))
        except Exception:  # a record cut off mid-write
            written = []
        if any(record.WhichOneof("record_type") == "exit" for record in written) or time.time() > deadline:
            return written
        time.sleep(0.2)


def read_back(folder):
    """(history rows, final summary, step metrics) of the one wandb run written under folder."""
    [path] = glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
    history, summary, steps = [], {}, {}
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({name(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            summary.update({name(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "metric" and record.metric.glob_name:
            steps[record.metric.glob_name] = record.metric.step_metric
    return history, summary, steps


@pytest.fixture(scope="module")
def experiments(data_dir, tmp_path_factory):
    """Two experiments in one results folder, as wandb records them: the first trains every run; the
    second, at another dendrite learning rate, trains the dendritic runs and controls again and
    reuses the baselines. Returns (results folder, each experiment's records: history, summary, steps)."""
    folder = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        patch.chdir(folder)  # wandb writes ./wandb/
        for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID"):
            patch.delenv(name, raising=False)
        records = []
        for extra in ([], ["--dendrite-lr-multiplier", "10"]):
            main.main(["--width", str(TINY_WIDTH), "--data-dir", data_dir, "--results-dir", str(folder / "results"),
                       *FLAGS, *extra])
            records.append(read_back(folder))
            shutil.rmtree(glob.glob(str(folder / "wandb" / "offline-run-*"))[0])  # the next is read alone
        wandb.teardown()  # wandb keeps the folder of its first run for the whole process
    return folder / "results", records


def test_one_wandb_run_holds_every_run_its_growth_and_the_verdict(experiments):
    results, [(history, summary, steps), _] = experiments
    for run in ("resnet18", "resnet34", "resnet18_dendritic", "resnet18_continued"):
        for seed in (0, 1):
            prefix = f"{run}/seed{seed}"
            assert steps[f"{prefix}/*"] == f"{prefix}/epoch"  # an epoch axis of its own
            epochs = [row[f"{prefix}/val_accuracy"] for row in history if f"{prefix}/val_accuracy" in row]
            assert summary[f"{prefix}/reused"] is False and len(epochs) == summary[f"{prefix}/epochs_trained"] > 0
    for run in ("resnet18", "resnet34"):  # the baselines' result.json: not trained since
        result = json.loads((results / run / "result.json").read_text())
        assert summary[f"{run}/seed0/test_accuracy"] == result["test_accuracy"]
        assert summary[f"{run}/seed0/val_accuracy"] == result["val_accuracy"]
    added = [row for row in history if "resnet18_dendritic/seed0/dendrite_added" in row]
    assert added[0]["resnet18_dendritic/seed0/epoch"] == 1 and added[0]["resnet18_dendritic/seed0/dendrite_added"] == 1
    assert added[0]["resnet18_dendritic/seed0/params_after_growth"] > summary["resnet18/seed0/params"]
    for picture in ("pictures/comparison", "pictures/resnet18_dendritic/seed1/curves"):  # uploaded as images
        assert summary[f"{picture}/_type"] == "image-file" and summary[f"{picture}/format"] == "png"


def test_the_verdict_and_the_sweep_metric_are_the_experiments_own(experiments):
    results, [_, (history, summary, _)] = experiments
    summary_json = json.loads((results / "summary.json").read_text())  # the second experiment's
    headline = summary_json["headline"][0]
    key = "headline/resnet18_dendritic - resnet34"
    assert (summary[f"{key}/difference"], summary[f"{key}/low"], summary[f"{key}/high"]) == pytest.approx(
        (headline["difference"], headline["low"], headline["high"]))
    control = "comparison/resnet18_dendritic - resnet18_continued/difference"
    assert summary[control] == pytest.approx(summary_json["comparisons"][2]["difference"])
    val = {(run["name"], run["seed"]): run["val_accuracy"] for run in summary_json["runs"]}
    gains = [val["resnet18_dendritic", seed] - val["resnet18_continued", seed] for seed in (0, 1)]
    assert summary[SWEEP_METRIC] == pytest.approx(sum(gains) / 2)  # over its control, paired by seed
    assert summary[DENDRITIC_VAL] == pytest.approx((val["resnet18_dendritic", 0] + val["resnet18_dendritic", 1]) / 2)


def test_a_second_experiment_records_the_runs_it_reuses(experiments):
    results, [_, (history, summary, _)] = experiments
    for seed in (0, 1):
        assert summary[f"resnet18/seed{seed}/reused"] is True and f"resnet18/seed{seed}/test_accuracy" in summary
        assert not any(f"resnet18/seed{seed}/val_accuracy" in row for row in history)  # no epochs: it did not train
        assert summary[f"resnet18_dendritic/seed{seed}/reused"] is False
        assert any(f"resnet18_dendritic/seed{seed}/val_accuracy" in row for row in history)


def test_a_sweep_trial_keeps_its_own_runs_and_shares_the_baselines(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SWEEP_ID", "s1")
    monkeypatch.setenv("WANDB_RUN_ID", "t7")
    from dendritic_experiment.tracking import sweep_trial

    settings = parse_settings(["--results-dir", str(tmp_path), "--wandb-project", "p", "--seeds", "0"])
    folders = {run.name: run.folder for run in plan_runs(settings, sweep_trial(settings))}
    assert folders["resnet18"] == str(tmp_path / "resnet18")
    assert folders["resnet18_dendritic"] == str(tmp_path / "sweeps" / "s1" / "t7" / "resnet18_dendritic")
    assert folders["resnet18_continued"] == str(tmp_path / "sweeps" / "s1" / "t7" / "resnet18_continued")
    assert sweep_trial(parse_settings(["--results-dir", str(tmp_path)])) is None  # without wandb, no trial


def test_a_sweep_trial_through_ray_trains_into_its_own_folder_and_logs_its_gain_over_the_control(data_dir, tmp_path):
    """Ray workers that do not know the trial (helpers.forget_sweep: as on a `ray start` cluster) train
    into the folder the driver gives them."""
    results = tmp_path / "results"
    flags = ["--width", str(TINY_WIDTH), "--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0",
             "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100"]
    main.main([*flags, "--experiments", "resnet18"])  # the baseline every trial shares: one Ray worker fewer
    sweep = dict(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_SWEEP_ID="s1", WANDB_RUN_ID="t1",
                 WORKER_SETUP_HOOK="helpers.forget_sweep")
    command = main_command([*flags, "--experiments", "resnet18,resnet18_dendritic", "--dendrite-epochs", "1",
                            "--max-dendrites", "1", "--wandb-project", "p", "--parallel-runs", "2"], worker_hook=True)
    driver = subprocess.Popen(command, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(script_environment(), **sweep),
                              start_new_session=True)
    try:
        _, stderr = driver.communicate(timeout=600)
    finally:  # Ray's processes are in the driver's process group: none outlives a failure
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, stderr
    trial = results / "sweeps" / "s1" / "t1"
    dendritic, control = (json.loads((trial / run / "result.json").read_text())
                          for run in ("resnet18_dendritic", "resnet18_continued"))
    assert "resnet18_dendritic (seed 0): started on" in stderr and "resnet18: reusing" in stderr
    assert not {"resnet18_dendritic", "resnet18_continued"} & set(os.listdir(results))  # only in the trial's folder
    _, summary, _ = read_back(tmp_path)
    assert summary[SWEEP_METRIC] == pytest.approx(dendritic["val_accuracy"] - control["val_accuracy"])
    assert summary[DENDRITIC_VAL] == pytest.approx(dendritic["val_accuracy"])


def test_the_sweep_has_no_two_trials_that_cannot_differ():
    """History mode ignores --dendrite-epochs: a grid crossing the two trains the same trial twice."""
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(PACKAGE, "sweep.yaml")) as f:
        parameters = yaml.safe_load(f)["parameters"]
    modes = parameters.get("switch-mode", {}).get("values", ["fixed"])
    assert not ("history" in modes and len(parameters.get("dendrite-epochs", {}).get("values", [])) > 1)

"""tests/gpu_check.sh --dry-run: the one call a session lent a GPU gets, checked here on the CPU in all
but CUDA, so that the GPU's few minutes are not lost to a broken script; and benchmark.py --quick, its
benchmark stage, runs end to end and writes a complete JSON (speed is not judged)."""
import csv
import json
import os
import subprocess

import pytest

from helpers import ROOT, TESTS, repository_files

STAGES = ("env", "data", "smoke", "resume", "benchmark", "timed", "share", "compile")
MODELS = ("resnet18", "resnet34", "resnet18_dendritic_1", "resnet18_dendritic_2")  # benchmark.py's
REFERENCES = ("resnet18", "resnet34")


@pytest.fixture(scope="module")
def gpu_check_dry_run(tmp_path_factory):
    """tests/gpu_check.sh --dry-run, run once: (the finished process, its $OUT folder, the files it
    added to or removed from the repository). Its benchmark stage is benchmark.py's quick run."""
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    before = repository_files()
    finished = subprocess.run(["bash", os.path.join(TESTS, "gpu_check.sh"), "--dry-run"], cwd=ROOT,
                              env=dict(os.environ, OUT=str(out)), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=900)
    return finished, out, repository_files() ^ before


def test_every_stage_of_the_gpu_check_runs_on_the_cpu(gpu_check_dry_run):
    finished, out, changed_files = gpu_check_dry_run
    assert finished.returncode == 0, finished.stdout[-4000:]
    with open(out / "stages.tsv") as f:
        assert {row["stage"]: row["status"] for row in csv.DictReader(f, delimiter="\t")} == dict.fromkeys(STAGES, "ok")
    for name in ("summary.txt", "benchmark.json", "share.json", "smoke/summary.json", "timed/projection.json",
                 "compile/projection.json"):
        assert (out / name).is_file(), name
    assert "resnet18_dendritic: resuming after epoch" in (out / "resume.rerun.log").read_text()
    assert not changed_files  # it writes nothing into the repository


def test_quick_benchmark_writes_every_measurement(gpu_check_dry_run):
    """benchmark.py --quick, as the GPU check's dry run runs it (in an empty folder, which the stage
    checks it leaves empty: the dendrite library writes to a temporary folder)."""
    finished, out, _ = gpu_check_dry_run
    assert "end benchmark: ok" in (out / "progress.log").read_text(), finished.stdout[-4000:]
    result = json.loads((out / "benchmark.json").read_text())
    assert result["device"] and result["device_type"] == "cpu"
    assert all(result[package] for package in ("python", "torch", "torchvision", "perforatedai"))
    assert result["settings"]["precision"] == "fp32" and result["settings"]["steps"] >= 1
    assert result["matmul"]["flops_per_s"] > 0 and result["matmul"]["dtype"] == "float32"
    for name in MODELS:
        entry = result["models"][name]
        for key in ("params", "forward_flops_per_image", "train_images_per_s", "train_step_ms_median",
                    "eval_images_per_s", "achieved_flops_fraction"):
            assert entry[key] > 0, (name, key)
        assert entry["peak_memory_bytes"] is None  # only measured on CUDA
    # Each dendrite adds parameters and FLOPs.
    params = [result["models"][name]["params"] for name in ("resnet18", "resnet18_dendritic_1", "resnet18_dendritic_2")]
    assert params == sorted(set(params))
    for name in REFERENCES:
        assert result["reference"][name]["train_images_per_s"] > 0
        assert result["ratios"][name] > 0
    for name in MODELS[2:]:
        cost = result["dendrite_cost"][name]
        assert cost["flops_ratio"] > 1 and cost["slowdown"] > 0 and cost["cost_vs_flops"] > 0
    assert 0 < result["augmentation"]["share_of_resnet18_step"]
    assert "ours / reference" in (out / "benchmark.txt").read_text()

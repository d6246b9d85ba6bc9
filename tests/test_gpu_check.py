"""tests/gpu_check.sh --dry-run: the one call a session lent a GPU gets, checked here on the CPU in all
but CUDA, so that the GPU's few minutes are not lost to a broken script."""
import csv
import os
import subprocess

from helpers import TESTS

ROOT = os.path.dirname(TESTS)
STAGES = ("env", "data", "smoke", "resume", "benchmark", "timed", "share", "compile")


def files_of(folder):
    """The repository's files, bytecode caches aside (pytest writes those)."""
    return {os.path.join(path, name) for path, folders, names in os.walk(folder)
            if "__pycache__" not in path and ".pytest_cache" not in path and "/.git" not in path for name in names}


def test_every_stage_of_the_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    before = files_of(ROOT)
    finished = subprocess.run(["bash", os.path.join(TESTS, "gpu_check.sh"), "--dry-run"], cwd=ROOT,
                              env=dict(os.environ, OUT=str(out)), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-4000:]
    with open(out / "stages.tsv") as f:
        assert {row["stage"]: row["status"] for row in csv.DictReader(f, delimiter="\t")} == dict.fromkeys(STAGES, "ok")
    for name in ("summary.txt", "benchmark.json", "share.json", "smoke/summary.json", "timed/projection.json",
                 "compile/projection.json"):
        assert (out / name).is_file(), name
    assert "resnet18_dendritic: resuming after epoch" in (out / "resume.rerun.log").read_text()
    assert files_of(ROOT) == before  # it writes nothing into the repository

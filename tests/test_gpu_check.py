"""tests/gpu_check.sh --dry-run: the one call a session lent a GPU gets, checked here on the CPU in all
but CUDA, so that the GPU's few minutes are not lost to a broken script."""
import csv

STAGES = ("env", "data", "smoke", "resume", "benchmark", "timed", "share", "compile")


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

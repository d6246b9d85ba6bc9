import contextlib
import json
import os
from types import SimpleNamespace

import pytest

from dendritic_experiment import main

from helpers import HALF_THE_CORES, SMOKE, copy_results, read_history, run_main

ONE_EPOCH = ["--seeds", "0", "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100"]


def finished_at(results, run):
    return json.loads((results / run / "result.json").read_text())["finished_at"]


def test_finished_runs_are_reused_until_a_setting_they_depend_on_changes(tiny, data_dir, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18", *ONE_EPOCH]
    main.main(args)
    first = finished_at(results, "resnet18")

    main.main(args)
    assert "resnet18: reusing" in capsys.readouterr().err
    assert finished_at(results, "resnet18") == first

    main.main(args + ["--lr", "0.05"])
    assert "reusing" not in capsys.readouterr().err
    second = finished_at(results, "resnet18")
    assert second != first

    main.main(args + ["--lr", "0.05", "--retrain"])
    assert finished_at(results, "resnet18") != second


def test_summary_lists_every_run_and_compares_them(tiny, data_dir, tmp_path):
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18,resnet34",
               *ONE_EPOCH])
    runs = json.loads((results / "summary.json").read_text())["runs"]
    assert [run["name"] for run in runs] == ["resnet18", "resnet34"]
    for run in runs:
        assert {"name", "model", "dendritic", "params", "test_accuracy", "val_accuracy", "dendrites", "epochs",
                "seconds"} <= set(run)
        assert 0 <= run["test_accuracy"] <= 100 and run["dendrites"] == 0
    table = (results / "summary.md").read_text()
    assert "| resnet34 |" in table and "params saved vs resnet34" in table


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs 0 is not allowed"),
    (["--experiments", "resnet99"], "--experiments 'resnet99' is not allowed: use a comma list of resnet18"),
    (["--dendrite-modules", "layer9.conv"], "layer3.0.conv2"),  # lists the valid names
    (["--precision", "fp8"], "--precision 'fp8' is not allowed"),
    (["--val-split", "60000"], "--val-split 60000 is not allowed"),
    (["--checkpoint-seconds", "-1"], "--checkpoint-seconds -1 is not allowed: use 0"),
    (["--plot-only"], "summary.json is missing"),
])
def test_bad_settings_are_refused_in_one_line(flags, message, tmp_path, capsys):
    assert main.cli(["--results-dir", str(tmp_path / "results"), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


@pytest.mark.parametrize("flags, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--batch-size", "big"], "argument --batch-size: invalid int value: 'big'"),
])
def test_unknown_flags_and_wrong_types_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--batch-size INT", "--data-dir STR", "--dendrite-modules STR", "--no-warm-start"):
        assert flag in text
    assert "(default: 512)" in text and "(default: resnet18,resnet34,resnet18_dendritic)" in text


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_smoke_run_writes_every_output(trained_once, data_dir, tmp_path):
    """End to end as a user runs it (stdin closed, umask 022), on a tiny CIFAR-100 folder, with tiny
    ResNets (the real ones' parameter counts are test_models'): trained once for the suite, which
    test_parallel.py runs again on Ray."""
    trained = trained_once("smoke", SMOKE, **HALF_THE_CORES)
    process = SimpleNamespace(stdout=(trained / "stdout").read_text(), stderr=(trained / "stderr").read_text())
    results = trained / "results" / "smoke"
    # Readable by others, as the umask allows for any new file (not the temporary file's 0600).
    modes = {path.relative_to(results): oct(path.stat().st_mode & 0o777) for path in results.rglob("*") if path.is_file()}
    assert set(modes.values()) == {"0o644"}, modes
    runs = {run["name"]: run for run in json.loads((results / "summary.json").read_text())["runs"]}
    assert list(runs) == ["resnet18", "resnet34", "resnet18_dendritic", "resnet18_continued"]
    assert runs["resnet18_dendritic"]["start"] == "baseline"
    first_epoch = read_history(results / "resnet18_dendritic")[0]
    assert first_epoch["dendrites"] == "1"  # a dendrite was really added
    assert float(first_epoch["dendrite_scale"]) > 0 and "dendrite_share" in first_epoch  # and measured
    summary = (results / "summary.md").read_text()
    assert "| resnet18_dendritic |" in summary
    assert "Preliminary: one seed (seed 0)" in summary and "--smoke trains seed 0 only" in process.stderr
    assert (results / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert (results / "resnet18_dendritic" / "PAI.png").read_bytes().startswith(b"\x89PNG")
    assert process.stdout.strip() == summary.strip()  # stdout is the summary alone (no library banner)
    # CPU latency: each architecture timed once, side by side (resnet18_continued is resnet18's network,
    # and so is the dendritic run's if it kept no dendrite)
    architectures = 3 if runs["resnet18_dendritic"]["dendrites"] else 2
    assert f"latency: {architectures} model(s) timed side by side on the CPU" in process.stderr
    assert all(set(run["latency_ms"]) == {"1", "32"} and min(run["latency_ms"].values()) > 0 for run in runs.values())
    assert runs["resnet18_continued"]["latency_ms"] == runs["resnet18"]["latency_ms"]
    row = next(line for line in summary.splitlines() if line.startswith("| resnet18 |"))
    assert row.endswith(f"| {runs['resnet18']['latency_ms']['1']:.1f} / {runs['resnet18']['latency_ms']['32']:.1f} | 1.00x |")
    ratio = runs["resnet18_dendritic"]["latency_ms"]["1"] / runs["resnet18"]["latency_ms"]["1"]
    assert next(line for line in summary.splitlines() if line.startswith("| resnet18_dendritic |")).endswith(f"| {ratio:.2f}x |")
    results = copy_results(trained, tmp_path / "out") / "smoke"
    again = run_main([*SMOKE, "--data-dir", data_dir, "--results-dir", "out"], cwd=tmp_path)
    assert again.returncode == 0 and "latency:" not in again.stderr  # nothing changed: the times are reused
    assert json.loads((results / "summary.json").read_text())["runs"] == list(runs.values())

    os.remove(results / "comparison.png")
    redraw = run_main(["--smoke", "--plot-only", "--results-dir", "out"], cwd=tmp_path)
    assert redraw.returncode == 0, redraw.stderr
    assert (results / "comparison.png").read_bytes().startswith(b"\x89PNG")


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    from dendritic_experiment.utils import write_json

    with umask(0o027):
        write_json(str(tmp_path / "result.json"), {"accuracy": 1})
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["result.json"]  # no temporary file left

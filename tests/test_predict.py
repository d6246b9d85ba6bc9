"""predict.py: a finished run's model, baseline or dendritic, classifies new images."""
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dendritic_experiment import config, data, main, models, predict

from helpers import PACKAGE, TINY_WIDTH, read_history, script_environment, scripted_validation

RUNS = ("resnet18", "resnet18_dendritic")


@pytest.fixture(scope="module")
def results(data_dir, tmp_path_factory):
    """A tiny baseline and its dendritic run (--width TINY_WIDTH), trained once for every test in
    this file; the predictors rebuild them at the width their result.json records."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "width", TINY_WIDTH)
        folder = tmp_path_factory.mktemp("results")
        main.main(["--data-dir", data_dir, "--results-dir", str(folder), "--seeds", "0", "--val-split", "150", "--epochs", "1",
                   "--warmup-epochs", "0", "--batch-size", "100", "--experiments", ",".join(RUNS),
                   "--dendrite-epochs", "1", "--max-dendrites", "1", "--no-control"])
        yield folder


@pytest.fixture(scope="module")
def predictors(results):
    return {run: predict.Predictor.load(str(results / run), device="cpu") for run in RUNS}


def random_image(width, height, mode="RGB", seed=0):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels, mode)


@pytest.mark.parametrize("run", RUNS)
def test_top_k_are_class_names_with_sorted_probabilities(predictors, run):
    predictor = predictors[run]
    image = random_image(32, 32)
    top = predictor.predict(image, top_k=5)
    names, probabilities = zip(*top)
    assert len(top) == 5 and len(set(names)) == 5
    assert set(names) <= set(predictor.classes)
    assert list(probabilities) == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities)
    everything = predictor.predict(image, top_k=1000)  # more than there are classes: all of them
    assert len(everything) == len(predictor.classes) == 100
    assert sum(p for _, p in everything) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("run", RUNS)
def test_any_size_and_mode_works_and_batches_agree_with_single_images(predictors, run):
    predictor = predictors[run]
    images = [random_image(17, 40, "RGBA", seed=1), random_image(64, 64, "L", seed=2), random_image(32, 32, seed=3)]
    batch = predictor.predict_batch(images, top_k=3)
    assert len(batch) == 3
    for image, from_batch in zip(images, batch):
        single = predictor.predict(image, top_k=3)
        assert [name for name, _ in single] == [name for name, _ in from_batch]
        assert [p for _, p in single] == pytest.approx([p for _, p in from_batch], abs=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_top_1_on_the_test_set_is_what_the_run_itself_predicted(predictors, results, data_dir, run):
    """The same preprocessing as training: at 32x32 the resize changes nothing, so the predictor
    must pick the classes the run saved in test_predictions.pt."""
    predictor = predictors[run]
    test_images, _ = data.read_cifar_file(os.path.join(data_dir, "cifar-100-python", "test"))
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in test_images]
    top_1 = [predictor.classes.index(top[0][0]) for top in predictor.predict_batch(images, top_k=1)]
    saved = torch.load(results / run / "test_predictions.pt", weights_only=True)["predicted"].tolist()
    # At most one disagreement: training evaluated in channels_last, whose float sums can break a
    # near-tie the other way; a wrong colour order or normalisation disagrees on many more.
    assert sum(a != b for a, b in zip(top_1, saved)) <= 1


def test_cli_prints_each_image_with_its_top_k(results, tmp_path, capsys):
    first, second = tmp_path / "cat.png", tmp_path / "big photo.jpg"
    random_image(20, 30, "RGBA").save(first)
    random_image(200, 120, seed=5).save(second)
    assert predict.cli([str(results / "resnet18_dendritic"), str(first), str(second), "--top-k", "3",
                        "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[0] == str(first) and lines[4] == str(second)
    for rank, line in enumerate(lines[1:4] + lines[5:8]):
        match = re.fullmatch(r"  (\d)\. (class_\d+) +(\d+\.\d)%", line)
        assert match and int(match.group(1)) == rank % 3 + 1, line


def test_a_dendritic_run_predicts_where_perforatedai_cannot_be_imported(results, tmp_path, capsys):
    """Its dendrites are rebuilt in plain PyTorch (plain_model.py): the same output as in this process."""
    blocked = tmp_path / "blocked" / "perforatedai"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('perforatedai is not installed here (test)')\n")
    image = tmp_path / "image.png"
    random_image(32, 32, seed=7).save(image)
    args = [str(results / "resnet18_dendritic"), str(image), "--top-k", "3", "--device", "cpu"]
    environment = script_environment()
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "blocked"), environment["PYTHONPATH"]])
    finished = subprocess.run([sys.executable, os.path.join(PACKAGE, "predict.py"), *args], capture_output=True,
                              text=True, timeout=120, env=environment)
    assert finished.returncode == 0, finished.stderr
    assert predict.cli(args) == 0
    assert finished.stdout == capsys.readouterr().out


def test_help_explains_the_command():
    """As a user runs it: the script on its own, outside pytest."""
    finished = subprocess.run([sys.executable, os.path.join(PACKAGE, "predict.py"), "--help"],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0
    assert "--top-k" in finished.stdout and "--device" in finished.stdout and "result.json" in finished.stdout


def torch_bytes(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def saved(results, run):
    return torch.load(results / run / "model.pt", weights_only=True)


# case: (the real run whose result.json the folder gets, what its model.pt holds: bytes, or None for none)
BROKEN_CHECKPOINTS = {
    "no model.pt": ("resnet18", lambda results: None),
    "random bytes": ("resnet18_dendritic", lambda results: os.urandom(2000)),
    "another model's weights": (
        "resnet18", lambda results: torch_bytes(models.build_model("resnet34", 100).state_dict())),
    "a dendritic checkpoint in a baseline run": (
        "resnet18", lambda results: torch_bytes(saved(results, "resnet18_dendritic"))),
    "a baseline checkpoint in a dendritic run": (
        "resnet18_dendritic", lambda results: torch_bytes(saved(results, "resnet18"))),
    "the dendritic layout around plain weights": ("resnet18_dendritic", lambda results: torch_bytes(
        {"model": saved(results, "resnet18"), "tracker": saved(results, "resnet18_dendritic")["tracker"]})),
}


def assert_refused_naming(path, exit_status, capsys):
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert exit_status == 2 and captured.out == ""
    assert "\n" not in error and error.startswith("error: ") and str(path) in error, error


@pytest.mark.parametrize("case", list(BROKEN_CHECKPOINTS))
def test_a_missing_or_foreign_checkpoint_is_refused_in_one_line_naming_it(results, tmp_path, capsys, case):
    result_from, model_pt = BROKEN_CHECKPOINTS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "result.json").write_bytes((results / result_from / "result.json").read_bytes())
    if (content := model_pt(results)) is not None:
        (folder / "model.pt").write_bytes(content)
    image = tmp_path / "image.png"
    random_image(32, 32).save(image)
    assert_refused_naming(folder / "model.pt", predict.cli([str(folder), str(image)]), capsys)


def test_a_missing_run_folder_or_result_json_is_refused_in_one_line_naming_it(tmp_path, capsys):
    image = tmp_path / "image.png"
    random_image(32, 32).save(image)
    assert_refused_naming(tmp_path / "missing", predict.cli([str(tmp_path / "missing"), str(image)]), capsys)
    assert_refused_naming(tmp_path / "result.json", predict.cli([str(tmp_path), str(image)]), capsys)


@pytest.mark.parametrize("content", [b"not an image", None])
def test_an_image_that_cannot_be_read_is_one_line_naming_it(results, tmp_path, capsys, content):
    image = tmp_path / "holiday.png"
    if content is not None:
        image.write_bytes(content)
    assert_refused_naming(image, predict.cli([str(results / "resnet18"), str(image)]), capsys)


@pytest.mark.parametrize("module, params_per_dendrite, in_millions, copied", [
    # a copy of fc (64 -> 100, with its bias), and its 100 output scales
    ("fc", (64 * 100 + 100) + 100, "0.007", "fc.dendrite_module.layers.0.model.0.weight"),
    # a copy of the whole block layer3.0 (16 -> 32 channels, stride 2): conv1 3x3 and its BatchNorm, conv2 3x3 and
    # its BatchNorm, the 1x1 projection shortcut and its BatchNorm; and its 32 output scales
    ("layer3.0", (16 * 32 * 9 + 2 * 32) + (32 * 32 * 9 + 2 * 32) + (16 * 32 + 2 * 32) + 32, "0.015",
     "layer3.0.dendrite_module.layers.0.model.0.shortcut.0.weight"),
])
def test_a_dendrite_on_the_classifier_or_a_whole_block_trains_is_saved_reloaded_and_predicts(
        tiny, data_dir, tmp_path, monkeypatch, module, params_per_dendrite, in_millions, copied):
    scripted_validation("90,95", monkeypatch.setattr)  # the cycle beats the baseline on every CPU: its dendrite is kept
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0", "--val-split", "150",
               "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100", "--experiments", ",".join(RUNS),
               "--dendrite-modules", module, "--dendrite-epochs", "2", "--max-dendrites", "1", "--dendrite-min-gain", "0",
               "--no-control"])
    run_dir = results / "resnet18_dendritic"
    result = json.loads((run_dir / "result.json").read_text())
    baseline = json.loads((results / "resnet18" / "result.json").read_text())
    assert result["dendrites"] == 1 and result["params"] == baseline["params"] + result["params_per_dendrite"]
    assert result["params_per_dendrite"] == params_per_dendrite
    assert float(read_history(run_dir)[-1]["dendrite_scale"]) > 0  # it trained
    assert copied in torch.load(run_dir / "model.pt")["model"]
    predictor = predict.Predictor.load(str(run_dir), device="cpu")
    test_images, _ = data.read_cifar_file(os.path.join(data_dir, "cifar-100-python", "test"))
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in test_images]
    top_1 = [predictor.classes.index(top[0][0]) for top in predictor.predict_batch(images, top_k=1)]
    saved = torch.load(run_dir / "test_predictions.pt", weights_only=True)["predicted"].tolist()
    assert sum(a != b for a, b in zip(top_1, saved)) <= 1
    summary = (results / "summary.md").read_text()
    assert "| resnet18_dendritic |" in summary and f"| {in_millions} |" in summary

"""export.py and plain_model.py: a finished run's model, dendrites included, as plain PyTorch and as a
torch.export program that runs where perforatedai cannot be imported, computing what the library computes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from dendritic_experiment import export, plain_model
from dendritic_experiment.data import DATASETS, prepare_batch, read_cifar_file
from dendritic_experiment.models import build_model, dendrite_modules_of
from dendritic_experiment.identity import result_settings
from dendritic_experiment.utils import save_torch, write_json

from helpers import PACKAGE, TINY_WIDTH, script_environment
from latency_table import library_model

# Two dendrites each on a conv+bn pair and on a whole residual block: every term of the forward
# (two activations, the dendrite-to-dendrite weights, per-channel scales) and both kinds of module.
MODULES = ["layer3.0.conv2", "layer3.1"]
CLASSES = [f"class_{i}" for i in range(100)]
BATCH_SIZES = (1, 13)
LOADER = """
import json, sys, torch
try:
    import perforatedai
    sys.exit("perforatedai was importable")
except ImportError:
    pass
extra = {"dendritic_experiment.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
model = program.module()
torch.set_grad_enabled(False)
inputs = torch.load(sys.argv[2])
torch.save({"logits": [model(x) for x in inputs], "params": sum(p.numel() for p in program.parameters()),
            "info": json.loads(extra["dendritic_experiment.json"])}, sys.argv[3])
"""


def write_run(folder, name, state, dendritic, settings, params, dendrites=0):
    """A finished run's folder as main.py leaves it, for what export and predict read: result.json and model.pt."""
    folder.mkdir()
    save_torch(str(folder / "model.pt"), state)
    write_json(str(folder / "result.json"), dict(
        name=name, model="resnet18", dendritic=dendritic, dendrites=dendrites, seed=0, dataset="cifar100",
        classes=CLASSES, params=params,
        settings=result_settings(settings, "resnet18", "dendritic" if dendritic else "baseline", 0)))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """A dendritic run (the library's model, grown and given random non-zero dendrite weights: no
    training, so nothing depends on which epoch scores best), a baseline run, and test images."""
    folder = tmp_path_factory.mktemp("results")
    dendritic = library_model("resnet18", MODULES, 2, width=TINY_WIDTH)
    test_images, _ = read_cifar_file(os.path.join(data_dir, "cifar-100-python", "test"))
    inputs = [prepare_batch(test_images[:size], memory_format=torch.contiguous_format) for size in BATCH_SIZES]
    with torch.no_grad():
        library_logits = [dendritic.model(x) for x in inputs]
    baseline = build_model("resnet18", 100, TINY_WIDTH).eval()
    yield dict(
        dendritic=write_run(folder / "resnet18_dendritic", "resnet18_dendritic", dendritic.checkpoint_state(), True,
                            dendritic.settings, dendritic.parameter_count(), dendrites=2),
        baseline=write_run(folder / "resnet18", "resnet18", baseline.state_dict(), False, dendritic.settings,
                           sum(p.numel() for p in baseline.parameters())),
        inputs=inputs, library_logits=library_logits, baseline_model=baseline, folder=folder)


def without_perforatedai(tmp_path):
    """A subprocess environment in which `import perforatedai` raises ImportError."""
    package = tmp_path / "blocked" / "perforatedai"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('perforatedai is not installed here (test)')\n")
    environment = script_environment()
    return dict(environment, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocked"), environment["PYTHONPATH"]]))


def test_the_exported_dendritic_program_runs_without_perforatedai_and_gives_the_library_logits(runs, tmp_path):
    environment, program = without_perforatedai(tmp_path), tmp_path / "out" / "resnet18_dendritic.pt2"
    exported = subprocess.run([sys.executable, os.path.join(PACKAGE, "export.py"), str(runs["dendritic"]), str(program)],
                              capture_output=True, text=True, timeout=300, env=environment)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"{program}: resnet18 (2 dendrites)")
    torch.save(runs["inputs"], tmp_path / "inputs.pt")
    loaded = subprocess.run([sys.executable, "-c", LOADER, str(program), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                            capture_output=True, text=True, timeout=300, env=environment)
    assert loaded.returncode == 0, loaded.stderr
    out = torch.load(tmp_path / "out.pt")
    for logits, expected in zip(out["logits"], runs["library_logits"], strict=True):  # two batch sizes
        assert logits.shape == expected.shape
        assert torch.allclose(logits, expected, rtol=0, atol=1e-5), (logits - expected).abs().max()
    result = json.loads((runs["dendritic"] / "result.json").read_text())
    assert out["params"] == out["info"]["params"] == result["params"]
    assert out["info"]["classes"] == CLASSES and out["info"]["dendrites"] == 2
    assert (out["info"]["mean"], out["info"]["std"]) == (list(DATASETS["cifar100"]["mean"]), list(DATASETS["cifar100"]["std"]))


def test_a_run_reports_the_parameters_that_run_and_they_are_counted_before_training(runs):
    """The library's model also holds parameters no forward uses (its hidden copy, older output
    scales, the next dendrite's scaffold); the run's count, the plain model's and the count made from
    the settings alone agree, and leave them out."""
    result = json.loads((runs["dendritic"] / "result.json").read_text())
    model = plain_model.load(str(runs["dendritic"]))
    assert sum(p.numel() for p in model.parameters()) == result["params"]
    assert plain_model.dendritic_params("resnet18", 100, TINY_WIDTH, MODULES, 2) == result["params"]
    assert plain_model.dendritic_params("resnet18", 100, TINY_WIDTH, MODULES, 0) == sum(
        p.numel() for p in runs["baseline_model"].parameters())
    # Full width on the meta device: ResNet-18 with one dendrite on its auto modules (PAI_NOTES: 12,401,316 run),
    # and on ResNet-34 a second dendrite adds one more copy, its scales and its weights on the first (256 each).
    auto = dendrite_modules_of("resnet18", "auto")
    assert plain_model.dendritic_params("resnet18", 100, 1.0, auto, 1) == 12_401_316
    one, two = (plain_model.dendritic_params("resnet34", 100, 1.0, auto, k) for k in (1, 2))
    assert two - one == 12_401_316 - 11_220_132 + 2 * 256


def test_the_plain_model_computes_what_the_library_computes_and_each_term_counts(runs):
    model = plain_model.load(str(runs["dendritic"]))
    assert not model.training
    with torch.no_grad():
        for x, expected in zip(runs["inputs"], runs["library_logits"]):
            assert torch.allclose(model(x), expected, rtol=0, atol=1e-5)
        x, expected = runs["inputs"][1], runs["library_logits"][1]
        for name in MODULES:  # without the second dendrite's weight on the first, the output changes
            model.get_submodule(name).earlier[0].zero_()
            assert not torch.allclose(model(x), expected, rtol=0, atol=1e-3)


def test_a_baseline_exports_too_and_its_program_takes_any_batch(runs, tmp_path):
    program_file = tmp_path / "resnet18.pt2"
    assert export.cli([str(runs["baseline"]), str(program_file)]) == 0
    extra = {export.METADATA: ""}
    program = torch.export.load(str(program_file), extra_files=extra)
    assert json.loads(extra[export.METADATA])["dendrites"] == 0
    with torch.no_grad():
        for x in runs["inputs"]:
            assert torch.allclose(program.module()(x), runs["baseline_model"](x), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in program.parameters()) == sum(p.numel() for p in runs["baseline_model"].parameters())


def refused(capsys, status, naming):
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert status == 2 and captured.out == "" and "\n" not in error and error.startswith("error: ") and str(naming) in error, error


def test_a_missing_or_unfinished_run_or_an_unwritable_file_is_refused_in_one_line_and_nothing_is_written(
        runs, tmp_path, capsys):
    missing = tmp_path / "missing"
    refused(capsys, export.cli([str(missing), str(tmp_path / "a.pt2")]), missing)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "result.json").write_bytes((runs["baseline"] / "result.json").read_bytes())
    refused(capsys, export.cli([str(unfinished), str(tmp_path / "a.pt2")]), unfinished / "model.pt")
    (tmp_path / "a file").write_text("")
    inside_a_file = tmp_path / "a file" / "model.pt2"
    refused(capsys, export.cli([str(runs["baseline"]), str(inside_a_file)]), inside_a_file)
    refused(capsys, export.cli([str(runs["baseline"]), str(tmp_path)]), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["a file", "unfinished"]  # no program, no temporary file


def test_help_explains_the_command():
    finished = subprocess.run([sys.executable, os.path.join(PACKAGE, "export.py"), "--help"],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0
    assert all(word in finished.stdout for word in ("torch.export", "perforatedai", "FILE", "result.json", "logits"))

"""benchmark.py --quick runs end to end on a CPU and writes a complete JSON (speed is not judged)."""
import json
import os
import subprocess
import sys

BENCHMARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "dendritic_experiment", "benchmark.py")
MODELS = ("resnet18", "resnet34", "resnet18_dendritic_1", "resnet18_dendritic_2")
REFERENCES = ("resnet18", "resnet34")


def test_quick_benchmark_writes_every_measurement(tmp_path):
    output = tmp_path / "out" / "benchmark.json"
    process = subprocess.run([sys.executable, BENCHMARK, "--quick", "--device", "cpu", "--output", str(output)],
                             cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    result = json.loads(output.read_text())
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
    assert "ours / reference" in process.stdout
    # Nothing is left in the working directory: the dendrite library wrote to a temporary folder.
    assert sorted(os.listdir(tmp_path)) == ["out"]

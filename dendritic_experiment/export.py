"""Write a finished run's model (any kind) as a torch.export program, a .pt2 file that runs with torch alone: no
perforatedai, no code of this project. A dendritic run's dendrites are rebuilt in plain PyTorch first (plain_model.py):
the program holds only the parameters that run, as many as the run's "params" in result.json and summary.json.

    python dendritic_experiment/export.py results/resnet18_dendritic resnet18_dendritic.pt2

The program takes a float32 batch N x 3 x 32 x 32 (RGB, any N), normalised as in training, and returns
N x classes logits; the file holds, as dendritic_experiment.json, the class names and the normalisation
(mean and std per channel, on the 0-1 scale). Load it:

    import json, torch
    extra = {"dendritic_experiment.json": ""}
    program = torch.export.load("resnet18_dendritic.pt2", extra_files=extra)
    info = json.loads(extra["dendritic_experiment.json"])   # classes, mean, std, run, params, ...
    model = program.module()                                 # in eval mode already (BatchNorm statistics fixed)
    pixels = torch.as_tensor(images_uint8_nhwc)             # N x 32 x 32 x 3, as CIFAR stores images
    mean, std = (torch.tensor(info[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
    logits = model((pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    names = [info["classes"][i] for i in logits.argmax(1)]
"""
import argparse
import io
import json
import os
import sys

import torch

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment import plain_model  # noqa: E402
from dendritic_experiment.data import DATASETS  # noqa: E402
from dendritic_experiment.utils import ExperimentError, check_writable, run_cli, write_atomic  # noqa: E402

METADATA = "dendritic_experiment.json"  # the name of the description inside the .pt2 (torch.export's extra_files)
EXAMPLE_BATCH = 2  # images in the batch traced; the batch dimension stays dynamic (1 and up)


def export_program(model):
    """model (eval mode, plain PyTorch, on the CPU) as an ExportedProgram with a dynamic batch dimension."""
    example = torch.zeros(EXAMPLE_BATCH, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def metadata(result, program):
    """What a user of the program needs beside it: the classes, the input's normalisation, where it came from."""
    dataset = DATASETS[result["dataset"]]
    settings = result["settings"]
    return {
        "run": result.get("name"), "model": result["model"], "dataset": result["dataset"], "classes": result["classes"],
        "input": "float32 N x 3 x 32 x 32, RGB, (pixels / 255 - mean) / std per channel",
        "mean": list(dataset["mean"]), "std": list(dataset["std"]),
        "params": sum(parameter.numel() for parameter in program.parameters()),
        "dendrites": result.get("dendrites", 0) if result["dendritic"] else 0,
        "dendrite_modules": settings.get("dendrite_modules") if result["dendritic"] else None,
        "dendrite_activation": settings.get("dendrite_activation") if result["dendritic"] else None,
    }


def export_run(run_dir, path):
    """Write the program of the finished run in run_dir to path (whole or not at all); returns its metadata."""
    result = plain_model.read_result(run_dir)
    if os.path.isdir(path):
        raise ExperimentError(f"{path} is a folder: give the name of the file to write, such as model.pt2")
    check_writable(os.path.dirname(os.path.abspath(path)), f"{path}: its folder")  # before the export's seconds
    program = export_program(plain_model.load(run_dir, result))
    info = metadata(result, program)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA: json.dumps(info, indent=2)})
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as error:
        raise ExperimentError(f"{path} cannot be written ({error.strerror}); choose another file") from None
    return info


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python dendritic_experiment/export.py",
        description="Write a finished run's model as a torch.export program (.pt2) that runs without perforatedai: "
        "it takes a float32 N x 3 x 32 x 32 batch normalised as in training (any N) and returns the logits. The "
        f"class names and the normalisation are inside it ({METADATA}; read it with torch.export.load's "
        "extra_files). A dendritic run's dendrites are rebuilt in plain PyTorch. How to load and use it: the "
        "docstring of dendritic_experiment/export.py.",
    )
    parser.add_argument("run_dir", help="a finished run's folder, holding result.json and model.pt "
                        "(such as results/resnet18 or results/resnet18_dendritic)")
    parser.add_argument("file", metavar="FILE", help="the .pt2 file to write (replaced whole if it exists)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    info = export_run(args.run_dir, args.file)
    size = os.path.getsize(args.file)
    print(f"{args.file}: {info['model']} ({info['dendrites']} dendrites), {info['params']:,} parameters, "
          f"{len(info['classes'])} classes, {size / 1e6:.1f} MB")


def cli(argv=None):
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())

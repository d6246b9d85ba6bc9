"""Exported ResNet-18, with and without dendrites, and perforatedai's own dendritic model, timed side by side
on the CPU (latency.measure_latency) with their parameters, MACs and .pt2 sizes: the table in docs/performance.md,
"Latency and export".

    python tests/latency_table.py      # ResNet-18 at full width, one dendrite on its two layer3 pairs, batch 1
"""
import argparse
import io
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as python tests/latency_table.py
from dendritic_experiment import costs, plain_model  # noqa: E402
from dendritic_experiment.costs import CIFAR_IMAGE  # noqa: E402
from dendritic_experiment.dendrites import DendriteTracker, wrapped_modules  # noqa: E402
from dendritic_experiment.export import export_program  # noqa: E402
from dendritic_experiment.latency import cpu_name, measure_latency  # noqa: E402
from dendritic_experiment.models import build_model, dendrite_modules_of  # noqa: E402
from dendritic_experiment.settings import parse_settings  # noqa: E402


def library_model(model_name, module_names, dendrites, activation="tanh", width=1.0, num_classes=100, seed=0):
    """The closed DendriteTracker (its .model, .checkpoint_state(), .parameter_count() stay usable) of perforatedai's
    model_name with `dendrites` dendrites on each of module_names, grown as a run grows them. Weights are random,
    each dendrite's output scale and dendrite-to-dendrite weight from N(0, 1) so that every term of the forward
    counts. The model's activation is the library's process-wide one: this model's until another is set."""
    torch.manual_seed(seed)
    settings = parse_settings(["--experiments", f"{model_name}_dendritic", "--dendrite-modules", ",".join(module_names),
                               "--max-dendrites", str(dendrites + 1), "--dendrite-activation", activation,
                               "--width", str(width)])
    images, labels = torch.randn(2, *CIFAR_IMAGE), torch.tensor([0, 1])
    model = build_model(model_name, num_classes, width)
    with tempfile.TemporaryDirectory(prefix="latency-") as run_dir, \
            DendriteTracker(model, module_names, settings, run_dir, "cpu") as tracker:
        for added in range(dendrites + 1):
            # As a run does: an optimizer for the current architecture, the shapes learnt, then a score;
            # each forced switch with a better score keeps the dendrite and adds the next one.
            tracker.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.LambdaLR,
                                    dict(lr_lambda=lambda epoch: 1.0))
            tracker.learn_shapes(images, labels)
            if added < dendrites:
                if added == 0:
                    tracker.start_from_baseline(50.0, 50.0)
                else:
                    tracker.end_epoch(50.0 + 10 * added, 50.0, 1, force_switch=True)
    if tracker.dendrite_count != dendrites:
        raise RuntimeError(f"the library grew {tracker.dendrite_count} dendrites, not {dendrites}")
    with torch.no_grad():
        for module in wrapped_modules(tracker.model):
            for parameter in [module.dendrites_to_top[-1], *module.dendrite_module.dendrites_to_dendrites]:
                parameter.normal_()
    tracker.model.eval()
    return tracker


def comparison(model_name, module_names, dendrites, activation, batch_sizes, threads, seconds):
    """Rows of the table: each model's parameters, MACs, .pt2 size and latency, exported and not."""
    library = library_model(model_name, module_names, dendrites, activation)
    plain = build_model(model_name).eval()
    dendritic = plain_model.dendritic_model(model_name, 100, 1.0, module_names, dendrites, activation)
    dendritic.load_state_dict(plain_model.from_library(library.checkpoint_state()["model"], dendritic, module_names))
    plain_program, dendritic_program = export_program(plain), export_program(dendritic)
    layers = costs.layer_macs(plain)
    plain_macs, dendritic_macs = sum(layers.values()), costs.dendritic_macs(layers, module_names, dendrites)
    # name: (the callable timed, its parameters, MACs per image, bytes of its .pt2)
    models = {
        f"{model_name}, exported": (plain_program.module(), count(plain_program), plain_macs,
                                    program_size(plain_program)),
        "dendritic, exported": (dendritic_program.module(), count(dendritic_program), dendritic_macs,
                                program_size(dendritic_program)),
        "dendritic, perforatedai": (library.model, library.parameter_count(), dendritic_macs, None),
        f"{model_name}, eager": (plain, count(plain), plain_macs, None),
        "dendritic, eager (plain_model)": (dendritic, count(dendritic), dendritic_macs, None),
    }
    latency = measure_latency({name: entry[0] for name, entry in models.items()}, batch_sizes, threads, seconds)
    return [dict(name=name, params=params, macs=macs, size=size, ms=latency[name])
            for name, (_, params, macs, size) in models.items()]


def count(model):
    """Parameters of an nn.Module or an ExportedProgram."""
    return sum(parameter.numel() for parameter in model.parameters())


def program_size(program):
    """Bytes of an ExportedProgram saved with torch.export.save."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return len(buffer.getvalue())


def print_table(rows, model_name, module_names, dendrites, threads):
    baseline = rows[0]
    batches = list(baseline["ms"])
    print(f"{model_name}, dendritic: {dendrites} dendrite(s) on {','.join(module_names)}; random weights; "
          f"{threads} thread(s), interleaved, medians; torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} CPUs")
    print("| model | parameters | MACs | MACs / base | .pt2 MB | "
          + " | ".join(f"batch {b} ms | / base" for b in batches) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|---:|" * len(batches))
    for row in rows:
        size = f"{row['size'] / 1e6:.1f}" if row["size"] else "-"
        cells = [f"{row['ms'][b]:.2f} | {row['ms'][b] / baseline['ms'][b]:.3f}" for b in batches]
        print(f"| {row['name']} | {row['params']:,} | {row['macs'] / 1e6:.1f}M | "
              f"{row['macs'] / baseline['macs']:.3f} | {size} | " + " | ".join(cells) + " |")
    exported = next(row for row in rows if row["name"] == "dendritic, exported")
    for b in batches:
        ratio, bound = exported["ms"][b] / baseline["ms"][b], 1.2 * exported["macs"] / baseline["macs"]
        print(f"batch {b}: exported dendritic / exported {model_name} = {ratio:.3f}, "
              f"bound 1.2 x MAC ratio = {bound:.3f}: {'within' if ratio <= bound else 'OVER'}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python tests/latency_table.py", description=(
        "Time, interleaved on the CPU, a model exported with torch.export, the same model with dendrites "
        "(rebuilt in plain PyTorch, then exported), perforatedai's own dendritic model, and both plain "
        "models in eager mode, all at full width with random weights; print their parameters, "
        "multiply-accumulates, .pt2 sizes and median latencies as a table."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="resnet18, resnet34, resnet50 (100 classes)")
    parser.add_argument("--dendrite-modules", default="auto", help="as config.py's dendrite_modules")
    parser.add_argument("--dendrites", type=int, default=1, help="dendrites on each of those modules")
    parser.add_argument("--dendrite-activation", default="tanh", help="tanh, sigmoid or relu")
    parser.add_argument("--batch-sizes", default="1", help="comma list")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per batch size, all models")
    args = parser.parse_args(argv)
    module_names = dendrite_modules_of(args.model, args.dendrite_modules)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = comparison(args.model, module_names, args.dendrites, args.dendrite_activation, batch_sizes, args.threads,
                      args.seconds)
    print_table(rows, args.model, module_names, args.dendrites, args.threads)


if __name__ == "__main__":
    main()

"""Classify new images with a finished run's model, baseline or dendritic: prints each image's most likely
classes with their probabilities.

    python dendritic_experiment/predict.py results/resnet18_dendritic photo.jpg more.png   # top 5 of each
    python dendritic_experiment/predict.py results/resnet18 photo.jpg --top-k 3 --device cpu

    from dendritic_experiment.predict import Predictor
    predictor = Predictor.load("results/resnet18", device="cpu")
    predictor.predict(Image.open("photo.jpg"), top_k=3)    # [("apple", 0.83), ("pear", 0.07), ...]
    predictor.predict_batch([image, other_image])          # one such list per image

Any image size or mode works: each becomes RGB at the models' 32x32, normalised as in training
(data.prepare_batch). Dendrites are rebuilt in plain PyTorch (plain_model.py): no perforatedai needed.
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment import plain_model  # noqa: E402
from dendritic_experiment.data import prepare_batch  # noqa: E402
from dendritic_experiment.settings import DEVICES, pick_device  # noqa: E402
from dendritic_experiment.utils import ExperimentError, run_cli  # noqa: E402

IMAGE_SIZE = 32  # CIFAR resolution: every model here saw only 32x32 inputs
BATCH_SIZE = 256  # images per forward pass: bounds memory for long lists of images


class Predictor:
    """A finished run's model in eval mode, with its class names and normalisation."""

    def __init__(self, model, classes, dataset, device):
        self.model, self.classes, self.dataset, self.device = model.eval(), classes, dataset, device

    @classmethod
    def load(cls, run_dir, device="auto"):
        """The model of results/<run>/ (result.json and model.pt) on device (auto, cpu, cuda, ...)."""
        device = pick_device(str(device))
        result = plain_model.read_result(run_dir)
        model = plain_model.load(run_dir, result).to(device)
        return cls(model, result["classes"], result["dataset"], device)

    @torch.no_grad()
    def probabilities(self, images):
        """PIL images (or image paths) -> N x classes tensor of softmax probabilities, on the CPU."""
        pixels = torch.stack([to_pixels(image) for image in images])
        chunks = []
        for start in range(0, len(pixels), BATCH_SIZE):
            x = prepare_batch(pixels[start:start + BATCH_SIZE].to(self.device),
                              memory_format=torch.contiguous_format, dataset=self.dataset)
            chunks.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(chunks)

    def predict_batch(self, images, top_k=5):
        """For each image, [(class name, probability)] of its top_k classes, most likely first."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if len(images) == 0:
            return []
        top = self.probabilities(images).topk(min(top_k, len(self.classes)), dim=1)
        return [[(self.classes[index], probability) for probability, index in zip(values, indices)]
                for values, indices in zip(top.values.tolist(), top.indices.tolist())]

    def predict(self, image, top_k=5):
        """[(class name, probability)] of one image's top_k classes, most likely first."""
        return self.predict_batch([image], top_k)[0]


def to_pixels(image):
    """A PIL image (any size or mode) or an image path -> uint8 3 x 32 x 32, as CIFAR stores images."""
    if not isinstance(image, Image.Image):
        image = open_image(image)
    return torch.from_numpy(np.array(to_model_size(image))).permute(2, 0, 1)


def to_model_size(image):
    """RGB at 32x32. BICUBIC: smooth downsampling of large photos; a 32x32 image stays unchanged."""
    return image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)


def open_image(path):
    """The image at path, fully read, or a one-line error naming the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, with its name, not later
            return image
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: give the path of an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExperimentError(f"{path} cannot be read as an image ({reason}); give a PNG, JPEG or other "
                              "file Pillow opens") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python dendritic_experiment/predict.py",
        description="Print the most likely classes of each image, with probabilities, from a finished run's "
        "model (baseline or dendritic). Images of any size are resized to 32x32.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a finished run's folder, holding result.json and model.pt "
                        "(such as results/resnet18 or results/resnet18_dendritic)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="classes printed per image")
    parser.add_argument("--device", default="auto", help=DEVICES)
    return parser


def format_prediction(name, prediction):
    """'name' and one line per class: rank, name (aligned), probability in percent."""
    width = max(len(class_name) for class_name, _ in prediction)
    lines = [f"  {rank}. {class_name:{width}s}  {100 * probability:5.1f}%"
             for rank, (class_name, probability) in enumerate(prediction, 1)]
    return "\n".join([name] + lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise ExperimentError(f"--top-k {args.top_k} is not allowed: use 1 or more")
    # Shrunk at once, so that many large photos never sit in memory together; a wrong path fails before the model loads.
    images = [to_model_size(open_image(path)) for path in args.images]
    predictor = Predictor.load(args.run_dir, args.device)
    for path, prediction in zip(args.images, predictor.predict_batch(images, args.top_k)):
        print(format_prediction(path, prediction))


def cli(argv=None):
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())

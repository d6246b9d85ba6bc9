"""Classify new images with a finished run's model, baseline or dendritic.

    python dendritic_experiment/predict.py results/resnet18_dendritic photo.jpg more.png   # top 5 of each
    python dendritic_experiment/predict.py results/resnet18 photo.jpg --top-k 3 --device cpu

prints, for each image, its most likely classes with their probabilities. In Python:

    from dendritic_experiment.predict import Predictor
    predictor = Predictor.load("results/resnet18", device="cpu")
    predictor.predict(Image.open("photo.jpg"), top_k=3)    # [("apple", 0.83), ("pear", 0.07), ...]
    predictor.predict_batch([image, other_image])          # one such list per image

Any image size or mode works: each is converted to RGB and resized to the 32x32 the models were
trained on, then normalised exactly as in training (data.prepare_batch).
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment.data import DATASETS, prepare_batch  # noqa: E402
from dendritic_experiment.dendrites import DendriteTracker, LibraryInUse, to_device, use_activation  # noqa: E402
from dendritic_experiment.models import build_model, dendrite_modules_of, model_and_width  # noqa: E402
from dendritic_experiment.settings import DENDRITE_SETTINGS, pick_device, valid_device_name  # noqa: E402
from dendritic_experiment.utils import ExperimentError, read_json, run_cli  # noqa: E402

IMAGE_SIZE = 32  # CIFAR resolution: every model here saw only 32x32 inputs
BATCH_SIZE = 256  # images per forward pass: bounds memory for long lists of images


class Predictor:
    """A finished run's model in eval mode, with its class names and normalisation."""

    def __init__(self, model, classes, dataset, device, dendrite_activation=None):
        self.model, self.classes, self.dataset, self.device = model.eval(), classes, dataset, device
        self.dendrite_activation = dendrite_activation  # a dendritic model's: see probabilities

    @classmethod
    def load(cls, run_dir, device="auto"):
        """The model of results/<run>/ (result.json and model.pt) on device (auto, cpu, cuda, ...)."""
        device = pick_device(check_device(str(device)))
        result = read_result(run_dir)
        model = to_device(load_model(run_dir, result, device), device)
        activation = result["settings"]["dendrite_activation"] if result["dendritic"] else None
        return cls(model, result["classes"], result["dataset"], device, activation)

    @torch.no_grad()
    def probabilities(self, images):
        """PIL images (or image paths) -> N x classes tensor of softmax probabilities, on the CPU."""
        pixels = torch.stack([to_pixels(image) for image in images])
        if self.dendrite_activation:  # one setting for the whole process: another model's may be in it
            use_activation(self.dendrite_activation)
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


def check_device(name):
    """The --device values main.py accepts; anything else is refused in one line."""
    if not valid_device_name(name):
        raise ExperimentError(f"--device {name!r} is not allowed: use auto, cpu, mps, cuda or cuda:N")
    return name


def read_result(run_dir):
    """result.json of a finished run, checked for what rebuilding its model needs."""
    if not os.path.isdir(run_dir):
        raise ExperimentError(f"{run_dir} is not a folder: give a finished run's folder, such as results/resnet18")
    path = os.path.join(run_dir, "result.json")
    result = read_json(path)
    if result is None:
        raise ExperimentError(f"{path} is missing or unreadable: give the folder of a finished run "
                              "(main.py writes result.json when the run ends)")
    settings = result.get("settings") if isinstance(result, dict) else None
    needed = DENDRITE_SETTINGS if isinstance(settings, dict) and result.get("dendritic") else ()
    if (not isinstance(settings, dict) or model_and_width(str(result.get("model"))) is None or result.get("dataset") not in DATASETS
            or not result.get("classes") or any(key not in settings for key in needed)):
        raise ExperimentError(f"{path} does not describe a finished run of this project (model, dataset, classes "
                              "or settings missing or unknown): run main.py again to rewrite it")
    return result


def load_model(run_dir, result, device):
    """The run's model, with its weights (and dendrites) from model.pt; the library is told the device."""
    path = os.path.join(run_dir, "model.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: the run has not finished; run main.py again to finish it") from None
    except Exception as error:
        raise ExperimentError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                              "train the run again (main.py --retrain) or restore the file") from None
    model = build_model(result["model"], len(result["classes"]), result["settings"].get("width", 1.0))
    if result["dendritic"]:
        return restore_dendrites(model, state, result, path, device)
    try:
        model.load_state_dict(state)
    except Exception:  # wrong keys or shapes, or not a state_dict at all
        raise foreign_checkpoint(path, result) from None
    return model


def foreign_checkpoint(path, result):
    return ExperimentError(f"{path} does not fit the {result['model']} with {len(result['classes'])} classes that "
                           "result.json names: it is from another run or model; put the run's own model.pt back "
                           "or train the run again (main.py --retrain)")


def restore_dendrites(model, state, result, path, device):
    """Convert the model as training did, then grow the saved dendrites into it."""
    settings = SimpleNamespace(**result["settings"])
    try:
        return load_dendritic_model(model, dendrite_modules_of(result["model"], settings.dendrite_modules), settings,
                                    state, device)
    except ValueError:
        raise foreign_checkpoint(path, result) from None


def load_dendritic_model(model, module_names, settings, state, device):
    """A finished dendritic run's model: model (freshly built) converted as training converted it,
    with the saved dendrites grown into it. Raises ValueError when state does not belong to it.
    perforatedai keeps one tracker per process: this one is released once the model is restored,
    and while a run trains in this process (its tracker live) loading is refused."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("tracker"), str):
        raise ValueError("not a dendritic checkpoint")
    # The library prints its progress, and on a checkpoint that does not fit it stops in pdb. So
    # its output is dropped, its stdin is empty (pdb would quit at once instead of waiting at a
    # prompt) and a scratch folder takes the files it writes: never the run folder or the cwd.
    with tempfile.TemporaryDirectory(prefix="predict-") as scratch, quiet_library():
        try:
            tracker = DendriteTracker(model, module_names, settings, run_dir=scratch, device=str(device))
        except LibraryInUse:
            raise
        except Exception as error:  # e.g. dendrite_modules naming layers this model does not have
            raise ValueError(f"cannot convert the model: {error}") from None
        with tracker:
            if not fits(tracker.model, state["model"], module_names):
                raise ValueError("the saved weights do not fit the converted model")
            try:
                return tracker.restore(state)
            except Exception as error:
                raise ValueError(f"the library refused the saved dendrites: {error}") from None


def fits(converted_model, saved, module_names):
    """Whether a dendritic state_dict belongs to this converted model: it has every key of the
    model, the same weight shapes, and its only extra keys are dendrites of the wrapped modules.
    Checked before the library sees it, because the library's own check ends in pdb."""
    expected = converted_model.state_dict()
    weights = dict(converted_model.named_parameters())
    extra = [key for key in saved if key not in expected]
    return (all(key in saved for key in expected)
            and all(saved[key].shape == weight.shape for key, weight in weights.items())
            and all(key.startswith(tuple(name + "." for name in module_names)) for key in extra))


@contextlib.contextmanager
def quiet_library():
    """perforatedai's prints dropped and an empty stdin, for the duration of a load. stderr too:
    the tracker sends the library's stdout there, and training progress means nothing here."""
    stdin, dropped = sys.stdin, io.StringIO()
    sys.stdin = io.StringIO("")
    try:
        with contextlib.redirect_stdout(dropped), contextlib.redirect_stderr(dropped):
            yield
    finally:
        sys.stdin = stdin


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
    parser.add_argument("--device", default="auto", help="auto, cpu, mps, cuda or cuda:N")
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
    # Shrunk at once, so that many large photos never sit in memory together; and a wrong path
    # fails before the model loads.
    images = [to_model_size(open_image(path)) for path in args.images]
    predictor = Predictor.load(args.run_dir, args.device)
    for path, prediction in zip(args.images, predictor.predict_batch(images, args.top_k)):
        print(format_prediction(path, prediction))


def cli(argv=None):
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())

"""CIFAR-100 and CIFAR-10: the python-pickle folders read into uint8 tensors on the training device, and each batch
augmented and normalised there in one go (no per-image Python). The batches' random numbers are drawn on the CPU, once
per epoch, whatever device trains: a seed gives the same batches on every device (docs/method.md, "The control")."""
import collections
import functools
import hashlib
import os
import pickle

import torch
import torch.nn.functional as F

from dendritic_experiment.utils import ExperimentError

DATASETS = {
    "cifar100": dict(name="CIFAR-100", folder="cifar-100-python", torchvision="CIFAR100", train=["train"],
                     test=["test"], labels="fine_labels", meta="meta", names="fine_label_names", classes=100,
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
    "cifar10": dict(name="CIFAR-10", folder="cifar-10-batches-py", torchvision="CIFAR10",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], labels="labels",
                    meta="batches.meta", names="label_names", classes=10,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
SPLIT_SEED = 0  # the validation split is the same for every run and every --seed
SMOKE_SIZES = {"train": 256, "val": 256, "test": 256}

Data = collections.namedtuple(
    "Data", "train_images train_labels val_images val_labels test_images test_labels classes"
)


def dataset_folder(data_dir, spec):
    """The dataset's python-pickle folder, downloaded through torchvision when it is missing."""
    folder = os.path.join(data_dir, spec["folder"])
    if not os.path.isdir(folder):
        import torchvision
        try:
            getattr(torchvision.datasets, spec["torchvision"])(data_dir, train=True, download=True)
        except Exception as error:  # no network, a proxy, a full disk: all end the same way
            raise ExperimentError(
                f"{spec['name']} is not in {folder} and could not be downloaded ({error}); put the "
                f"extracted {spec['folder']} folder in {os.path.abspath(data_dir)}"
            ) from None
    return folder


def data_fingerprint(data_dir, dataset):
    """What the data files a run reads hold, wherever they lie: 16 hex digits of a sha256 over the
    training and test pickles and the class names (its time: docs/performance.md, "Other measured times")."""
    spec = DATASETS[dataset]
    folder = dataset_folder(data_dir, spec)
    digest = hashlib.sha256()
    for name in spec["train"] + spec["test"] + [spec["meta"]]:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        except FileNotFoundError:
            if name == spec["meta"]:  # class names are only for display (read_class_names)
                continue
            raise ExperimentError(f"{path} is missing: delete the {spec['folder']} folder to download it again, "
                                  "or put the complete folder there") from None
    return digest.hexdigest()[:16]


def read_cifar_file(path, spec=DATASETS["cifar100"]):
    """One CIFAR pickle -> (uint8 images N x 3 x 32 x 32, int64 labels), checked."""
    num_classes = spec["classes"]
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images = torch.as_tensor(batch["data"], dtype=torch.uint8)
        labels = torch.as_tensor(batch[spec["labels"]], dtype=torch.int64)
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: delete the {spec['folder']} folder to download it again, "
                              "or put the complete folder there") from None
    except Exception as error:
        raise ExperimentError(f"{path} is not a readable {spec['name']} pickle ({type(error).__name__}: {error}); "
                              f"delete the {spec['folder']} folder to download it again") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ExperimentError(f"{path} holds data of shape {tuple(images.shape)} with {len(labels)} labels; "
                              "expected N x 3072 images and N labels: replace the file")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ExperimentError(f"{path} has labels outside 0..{num_classes - 1}: replace the file")
    return images.view(-1, 3, 32, 32), labels


def read_split(folder, files, spec):
    parts = [read_cifar_file(os.path.join(folder, name), spec) for name in files]
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


def read_class_names(folder, spec):
    try:
        with open(os.path.join(folder, spec["meta"]), "rb") as f:
            return list(pickle.load(f, encoding="latin1")[spec["names"]])
    except Exception:
        return [f"class {i}" for i in range(spec["classes"])]  # names are only for display


def load_data(settings, device):
    """Train/validation/test tensors on the device. The split is fixed by SPLIT_SEED."""
    spec = DATASETS[settings.dataset]
    folder = dataset_folder(settings.data_dir, spec)
    train_images, train_labels = read_split(folder, spec["train"], spec)
    test_images, test_labels = read_split(folder, spec["test"], spec)
    if settings.val_split >= len(train_images):
        raise ExperimentError(f"--val-split {settings.val_split} leaves no training images "
                              f"({len(train_images)} in {folder}); use a smaller split")
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_index, train_index = order[:settings.val_split], order[settings.val_split:]
    parts = {
        "train": (train_images[train_index], train_labels[train_index]),
        "val": (train_images[val_index], train_labels[val_index]),
        "test": (test_images, test_labels),
    }
    if settings.smoke:
        parts = {k: (x[:SMOKE_SIZES[k]], y[:SMOKE_SIZES[k]]) for k, (x, y) in parts.items()}
    tensors = [t.to(device) for images, labels in parts.values() for t in (images, labels)]
    return Data(*tensors, read_class_names(folder, spec))


@functools.lru_cache(maxsize=None)
def normalisation(dataset, device):
    """Mean and std (0-255 scale) on the device, made once: a tensor built from a list on a GPU
    is a blocking copy, which would stall the training step."""
    return tuple(torch.tensor(DATASETS[dataset][key], device=device) * 255 for key in ("mean", "std"))


def augmentation_draws(count, augment, cutout, generator=None, shape=(32, 32)):
    """Crop offsets and flips (augment) and cutout centres (cutout) for count images of shape (height,
    width), each count x 1 x 1, drawn on the CPU from generator (None: the global one)."""
    height, width = shape
    draws = {}
    if augment:
        draws["top"] = torch.randint(0, 9, (count, 1, 1), generator=generator)
        draws["left"] = torch.randint(0, 9, (count, 1, 1), generator=generator)
        draws["flip"] = torch.rand(count, 1, 1, generator=generator) < 0.5
    if cutout:
        draws["cutout_top"] = torch.randint(0, height, (count, 1, 1), generator=generator) - cutout // 2
        draws["cutout_left"] = torch.randint(0, width, (count, 1, 1), generator=generator) - cutout // 2
    return draws


def epoch_draws(images, batch_size, steps, augment, cutout, generator=None):
    """One epoch's batch order and each image slot's augmentation draws, drawn on the CPU in the order
    training uses them (the order, then batch by batch) and copied to the images' device once."""
    order = torch.randperm(len(images), generator=generator)
    batches = [augmentation_draws(batch_size, augment, cutout, generator, images.shape[-2:]) for _ in range(steps)]
    draws = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]} if batches else {}
    return order.to(images.device), {key: value.to(images.device) for key, value in draws.items()}


def prepare_batch(images, augment=False, cutout=0, memory_format=torch.channels_last, dataset="cifar100",
                  generator=None, draws=None):
    """uint8 N x 3 x H x W -> normalised float in memory_format, optionally augmented with draws (augmentation_draws
    on the images' device; None: drawn now from generator). Cutout (DeVries and Taylor 2017) zeroes a cutout x cutout
    square around a random centre, clipped at the border, after normalisation: the square becomes the mean colour."""
    n, _, height, width = images.shape
    device = images.device
    if (augment or cutout) and draws is None:
        draws = {key: value.to(device) for key, value in
                 augmentation_draws(n, augment, cutout, generator, (height, width)).items()}
    pixels = images.permute(0, 2, 3, 1)  # crop and flip gather whole pixels (NHWC)
    if augment:
        padded = F.pad(pixels, (0, 0, 4, 4, 4, 4))
        top, left = draws["top"], draws["left"]
        rows = top + torch.arange(height, device=device).view(1, -1, 1)
        cols = left + torch.arange(width, device=device).view(1, 1, -1)
        cols = torch.where(draws["flip"], 2 * left + width - 1 - cols, cols)  # mirror inside the crop
        pixels = padded[torch.arange(n, device=device).view(-1, 1, 1), rows, cols]
    mean, std = normalisation(dataset, device)
    x = ((pixels.float() - mean) / std).permute(0, 3, 1, 2)
    if cutout:
        top, left = draws["cutout_top"], draws["cutout_left"]
        ys = torch.arange(height, device=device).view(1, -1, 1)
        xs = torch.arange(width, device=device).view(1, 1, -1)
        inside = (ys >= top) & (ys < top + cutout) & (xs >= left) & (xs < left + cutout)
        x = x * (~inside).unsqueeze(1)
    return x.contiguous(memory_format=memory_format)

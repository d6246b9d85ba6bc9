"""Write a CIFAR-100 or CIFAR-10 folder in the real on-disk format (python pickles), with generated images.

    python tests/fake_cifar.py DATA_DIR [--dataset cifar100] [--train 50000] [--test 10000] [--kind colours]
    python tests/fake_cifar.py DATA_DIR --kind teacher --train 7000 --test 1000    # where capacity matters

--kind colours (the default): each class gets its own mean colour plus noise. Any network learns it
perfectly within an epoch: for the tests, and for timing full-size runs without downloading CIFAR.
--kind teacher: smooth random textures, labelled by a fixed random network, with --label-noise of
the labels replaced by random classes. Small networks stay far below 100% on it and wider ones
do measurably better: data on which a dendrite could show that it helps.
"""
import argparse
import math
import os
import pickle

import numpy as np
import torch
from torch import nn

# dataset -> (folder, training files, test file, label key, meta file, {name key: names})
LAYOUTS = {
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta",
                 {"fine_label_names": [f"class_{i}" for i in range(100)],
                  "coarse_label_names": [f"superclass_{i}" for i in range(20)]}),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
                "batches.meta", {"label_names": [f"class_{i}" for i in range(10)]}),
}


def write_batch(path, images, labels, label_key):
    batch = {"batch_label": os.path.basename(path), "filenames": [f"{i}.png" for i in range(len(labels))],
             label_key: labels.tolist(), "data": images.reshape(len(images), -1)}
    if label_key == "fine_labels":
        batch["coarse_labels"] = (labels // 5).tolist()
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def colour_coded(train, test, num_classes, seed, label_noise=0.0):
    """(images, labels) of train + test images: a class colour plus uniform noise each."""
    rng = np.random.default_rng(seed)
    class_colours = rng.integers(40, 216, size=(num_classes, 3, 1, 1))

    def generate(count):
        labels = rng.integers(0, num_classes, size=count)
        noise = rng.integers(-40, 41, size=(count, 3, 32, 32))
        return np.clip(class_colours[labels] + noise, 0, 255).astype(np.uint8), labels

    (train_images, train_labels), (test_images, test_labels) = generate(train), generate(test)
    return np.concatenate([train_images, test_images]), np.concatenate([train_labels, test_labels])


def teacher_labelled(train, test, num_classes, seed, label_noise=0.1):
    """(images, labels) of train + test images: textures labelled by a fixed random network, then
    a share label_noise of labels replaced by a class drawn uniformly (so the best possible
    accuracy is 1 - label_noise * (classes - 1) / classes: 90.1% at 0.1 with 100 classes)."""
    generator = torch.Generator().manual_seed(seed)
    count = train + test
    with torch.no_grad():
        images = torch.cat([textures(min(CHUNK, count - start), generator) for start in range(0, count, CHUNK)])
        teacher = Teacher(num_classes, seed=seed + 1)
        logits = teacher.calibrated_logits(images)
    clean = logits.argmax(1)
    noisy = torch.rand(count, generator=generator) < label_noise
    labels = torch.where(noisy, torch.randint(0, num_classes, (count,), generator=generator), clean)
    return images.numpy(), labels.numpy()


CHUNK = 5000  # images generated and labelled at a time: bounds memory at full size
KINDS = {"colours": colour_coded, "teacher": teacher_labelled}


def textures(count, generator, size=32):
    """count x 3 x size x size uint8 textures, independent of any class: white noise shaped in the
    Fourier domain by a random anisotropic power law (slope 1 to 3, elongation 1 to 4) plus a
    band-pass bump at a random frequency, mixed into RGB by a random colour matrix."""
    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(count, *shape, generator=generator)

    fy, fx = torch.fft.fftfreq(size).view(-1, 1), torch.fft.fftfreq(size).view(1, -1)
    angle, elongation = uniform(0, math.pi, 1, 1), uniform(1, 4, 1, 1)
    along = fx * torch.cos(angle) + fy * torch.sin(angle)
    across = -fx * torch.sin(angle) + fy * torch.cos(angle)
    radius = torch.sqrt(along ** 2 * elongation + across ** 2 / elongation) + 1e-3
    slope, peak = uniform(1, 3, 1, 1), uniform(0.05, 0.35, 1, 1)
    bump = torch.exp(-((radius - peak) ** 2) / (2 * 0.04 ** 2)) * uniform(0, 2, 1, 1)
    amplitude = radius ** (-slope) * 0.05 ** slope + bump
    amplitude[:, 0, 0] = 0  # no constant term: the colour matrix and mean set the colour
    noise = torch.randn(count, 3, size, size, generator=generator)
    field = torch.fft.ifft2(torch.fft.fft2(noise) * amplitude.unsqueeze(1)).real
    field = field / field.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    mix = torch.randn(count, 3, 3, generator=generator) * 0.5 + torch.eye(3) * uniform(0.5, 1.5, 1, 1)
    field = torch.einsum("nij,njhw->nihw", mix, field)
    mean = 0.5 + 0.15 * torch.randn(count, 3, 1, 1, generator=generator)
    images = mean + uniform(0.06, 0.2, 1, 1, 1) * field
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


class Teacher(nn.Module):
    """A fixed random CNN: three stages of two 3x3 conv-ReLU layers (12, 24, 48 channels), 2x2
    average pooling between them, global average and max pooling, a random linear head. Its kernels
    are left-right symmetric, so its labels do not change under the horizontal flips of training's
    augmentation; the global pooling makes them barely change under 4-pixel crops."""

    MEAN, STD = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1), torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)

    def __init__(self, num_classes, width=12, depth=2, seed=1):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        channels, layers = [3, width, 2 * width, 4 * width], []
        for stage in range(3):
            if stage > 0:
                layers.append(nn.AvgPool2d(2))
            for index in range(depth):
                in_channels = channels[stage] if index == 0 else channels[stage + 1]
                conv = nn.Conv2d(in_channels, channels[stage + 1], 3, 1, 1)
                weight = torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / (in_channels * 9))
                conv.weight.data = (weight + weight.flip(3)) / math.sqrt(2)
                conv.bias.data = torch.randn(conv.bias.shape, generator=generator) * 0.1
                layers += [conv, nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = torch.randn(num_classes, 2 * channels[-1], generator=generator) / math.sqrt(2 * channels[-1])

    def pooled(self, images):
        x = self.features((images.float() / 255 - self.MEAN) / self.STD)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1)

    def calibrated_logits(self, images, steps=300):
        """Logits on standardised features, less per-class offsets that make the classes of these
        images about equally frequent (else a few classes would take most images)."""
        features = torch.cat([self.pooled(images[start:start + 250]) for start in range(0, len(images), 250)])
        logits = ((features - features.mean(0)) / (features.std(0) + 1e-6)) @ self.head.T
        offset, balanced = torch.zeros(logits.shape[1]), len(logits) / logits.shape[1]
        for _ in range(steps):
            counts = torch.bincount((logits - offset).argmax(1), minlength=logits.shape[1]).float()
            offset += 0.1 * logits.std() * torch.log((counts + 1) / balanced)
        return logits - offset


def write_fake_cifar(data_dir, dataset="cifar100", train=1000, test=200, seed=0, kind="colours", label_noise=0.1):
    """Create DATA_DIR/<the dataset's folder> with train, test and meta files; returns that folder."""
    folder_name, train_files, test_file, label_key, meta_file, meta = LAYOUTS[dataset]
    num_classes = len(next(iter(meta.values())))
    images, labels = KINDS[kind](train, test, num_classes, seed, label_noise)
    folder = os.path.join(data_dir, folder_name)
    os.makedirs(folder, exist_ok=True)
    for name, part in zip(train_files, np.array_split(np.arange(train), len(train_files))):
        write_batch(os.path.join(folder, name), images[part], labels[part], label_key)
    write_batch(os.path.join(folder, test_file), images[train:], labels[train:], label_key)
    with open(os.path.join(folder, meta_file), "wb") as f:
        pickle.dump(meta, f)
    return folder


def write_fake_cifar100(data_dir, train=1000, test=200, seed=0):
    return write_fake_cifar(data_dir, "cifar100", train, test, seed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--dataset", choices=list(LAYOUTS), default="cifar100")
    parser.add_argument("--train", type=int, default=50000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--kind", choices=list(KINDS), default="colours", help="colours: learnt at once; "
                        "teacher: textures labelled by a random network, where capacity matters")
    parser.add_argument("--label-noise", type=float, default=0.1, help="--kind teacher: share of labels "
                        "replaced by a random class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_fake_cifar(args.data_dir, args.dataset, args.train, args.test, args.seed, args.kind, args.label_noise))

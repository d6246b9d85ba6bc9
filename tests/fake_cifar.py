"""Write a CIFAR-100 or CIFAR-10 folder in the real on-disk format (python pickles), with generated images.

    python tests/fake_cifar.py DATA_DIR [--dataset cifar100] [--train 50000] [--test 10000]

Each class gets its own mean colour plus noise, so a network can learn something from it.
Used by the tests, and for timing full-size runs without downloading CIFAR.
"""
import argparse
import os
import pickle

import numpy as np

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


def write_fake_cifar(data_dir, dataset="cifar100", train=1000, test=200, seed=0):
    """Create DATA_DIR/<the dataset's folder> with train, test and meta files; returns that folder."""
    folder_name, train_files, test_file, label_key, meta_file, meta = LAYOUTS[dataset]
    num_classes = len(next(iter(meta.values())))
    rng = np.random.default_rng(seed)
    class_colours = rng.integers(40, 216, size=(num_classes, 3, 1, 1))
    folder = os.path.join(data_dir, folder_name)
    os.makedirs(folder, exist_ok=True)

    def generate(count):
        labels = rng.integers(0, num_classes, size=count)
        noise = rng.integers(-40, 41, size=(count, 3, 32, 32))
        return np.clip(class_colours[labels] + noise, 0, 255).astype(np.uint8), labels

    images, labels = generate(train)
    for name, part in zip(train_files, np.array_split(np.arange(train), len(train_files))):
        write_batch(os.path.join(folder, name), images[part], labels[part], label_key)
    write_batch(os.path.join(folder, test_file), *generate(test), label_key)
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
    args = parser.parse_args()
    print(write_fake_cifar(args.data_dir, args.dataset, args.train, args.test))

"""Write a CIFAR-100 folder in the real on-disk format (python pickles), with generated images.

    python tests/fake_cifar.py DATA_DIR [--train 50000] [--test 10000]

Each class gets its own mean colour plus noise, so a network can learn something from it.
Used by the tests, and for timing full-size runs without downloading CIFAR-100.
"""
import argparse
import os
import pickle

import numpy as np


def write_fake_cifar100(data_dir, train=1000, test=200, seed=0):
    """Create DATA_DIR/cifar-100-python/{train,test,meta}; returns that folder."""
    rng = np.random.default_rng(seed)
    class_colours = rng.integers(40, 216, size=(100, 3, 1, 1))
    folder = os.path.join(data_dir, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train", train), ("test", test)):
        labels = rng.integers(0, 100, size=count)
        noise = rng.integers(-40, 41, size=(count, 3, 32, 32))
        images = np.clip(class_colours[labels] + noise, 0, 255).astype(np.uint8)
        batch = {
            "filenames": [f"{name}_{i}.png" for i in range(count)],
            "batch_label": f"{name} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": images.reshape(count, -1),
        }
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    meta = {"fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"superclass_{i}" for i in range(20)]}
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump(meta, f)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--train", type=int, default=50000)
    parser.add_argument("--test", type=int, default=10000)
    args = parser.parse_args()
    print(write_fake_cifar100(args.data_dir, args.train, args.test))

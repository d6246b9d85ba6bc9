import os
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dendritic_experiment import data
from dendritic_experiment.data import load_data, prepare_batch
from dendritic_experiment.utils import ExperimentError


def settings_for(data_dir, val_split=100, smoke=False, dataset="cifar100"):
    return SimpleNamespace(data_dir=data_dir, val_split=val_split, smoke=smoke, dataset=dataset)


def as_rows(images):
    return {bytes(image.flatten().tolist()) for image in images}


def test_splits_have_cifar_shapes_and_labels(data_dir):
    splits = load_data(settings_for(data_dir), torch.device("cpu"))
    assert splits.train_images.shape == (900, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert splits.val_images.shape == (100, 3, 32, 32)
    assert splits.test_images.shape == (200, 3, 32, 32)
    for labels in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 100
    assert len(splits.classes) == 100 and splits.classes[3] == "class_3"


def test_validation_split_is_disjoint_and_the_same_every_time(data_dir):
    first = load_data(settings_for(data_dir), torch.device("cpu"))
    second = load_data(settings_for(data_dir), torch.device("cpu"))
    assert torch.equal(first.val_images, second.val_images)
    assert torch.equal(first.val_labels, second.val_labels)
    assert not as_rows(first.val_images) & as_rows(first.train_images)
    assert len(as_rows(first.val_images) | as_rows(first.train_images)) == 1000


def test_smoke_keeps_a_small_slice(data_dir):
    splits = load_data(settings_for(data_dir, smoke=True), torch.device("cpu"))
    assert len(splits.train_images) == data.SMOKE_SIZES["train"]
    assert len(splits.val_images) == 100  # smaller than the smoke size already


def test_prepared_batch_is_normalised_float_in_channels_last():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    x = prepare_batch(images)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(data.DATASETS["cifar100"]["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.DATASETS["cifar100"]["std"]).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(x, (images.float() - mean) / std)


def test_augmentation_moves_and_mirrors_images_as_padded_crops():
    """Each augmented image is one of the 81 crops of its 4-pixel zero-padded image, or its mirror, and
    over a batch both mirrored and unmirrored images, and more than one offset, occur."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    x = prepare_batch(images, augment=True, generator=generator)
    assert x.shape == (16, 3, 32, 32)
    plain = prepare_batch(F.pad(images, (4, 4, 4, 4)))  # zero padding, as the augmentation uses
    found = set()
    for i in range(16):
        matches = [(top, left, mirrored) for top in range(9) for left in range(9) for mirrored in (False, True)
                   if torch.allclose(x[i], plain[i, :, top:top + 32, left:left + 32].flip(-1) if mirrored
                                     else plain[i, :, top:top + 32, left:left + 32])]
        assert len(matches) == 1, f"image {i} is not exactly one crop or mirror"
        found |= set(matches)
    assert {mirrored for _, _, mirrored in found} == {False, True}  # an unaugmented batch is all (4, 4, False)
    assert len({(top, left) for top, left, _ in found}) > 1


def test_cutout_blanks_a_square_of_cutout_by_cutout_pixels_clipped_at_the_border():
    images = torch.full((200, 3, 32, 32), 200, dtype=torch.uint8)
    blank = (prepare_batch(images, cutout=8, generator=torch.Generator().manual_seed(0)) == 0).all(dim=1)
    inside = 0
    for square in blank:
        rows, cols = square.any(dim=1).nonzero().flatten(), square.any(dim=0).nonzero().flatten()
        assert len(rows) and int(square.sum()) == len(rows) * len(cols) <= 64  # one rectangle, at most 8 x 8
        assert rows.tolist() == list(range(rows[0], rows[-1] + 1)) and cols.tolist() == list(range(cols[0], cols[-1] + 1))
        for lines in (rows, cols):  # shorter than 8 only where it meets a border
            assert len(lines) == 8 or lines[0] == 0 or lines[-1] == 31
        inside += int(square.sum()) == 64
    assert inside > 100  # most centres leave the square whole: exactly 64 pixels


def test_the_same_generator_state_draws_the_same_augmented_batch():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    first, second = (prepare_batch(images, augment=True, cutout=8, generator=torch.Generator().manual_seed(7))
                     for _ in range(2))
    assert torch.equal(first, second)
    torch.rand(1000)  # the global stream moves (as when a new dendrite is drawn): the batch does not
    assert torch.equal(first, prepare_batch(images, augment=True, cutout=8, generator=torch.Generator().manual_seed(7)))


def test_corrupt_pickle_names_the_file(tmp_path, data_dir):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(open(os.path.join(data_dir, "cifar-100-python", name), "rb").read())
    (folder / "train").write_bytes((folder / "train").read_bytes()[:5000])  # truncated
    with pytest.raises(ExperimentError, match="train is not a readable CIFAR-100 pickle"):
        load_data(settings_for(str(tmp_path)), torch.device("cpu"))


@pytest.mark.parametrize("pixels, labels, message", [
    (torch.zeros(10, 3072, dtype=torch.uint8), [150] * 10, "labels outside 0..99"),
    (torch.zeros(10, 100, dtype=torch.uint8), [1] * 10, "expected N x 3072 images"),
])
def test_wrong_labels_or_shapes_are_refused(tmp_path, pixels, labels, message):
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({"data": pixels.numpy(), "fine_labels": labels}))
    with pytest.raises(ExperimentError, match=message):
        data.read_cifar_file(str(path))


def test_missing_dataset_without_network_says_where_to_put_it(tmp_path, monkeypatch):
    import torchvision

    def no_network(*args, **kwargs):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", no_network)
    with pytest.raises(ExperimentError, match="put the extracted cifar-100-python folder"):
        load_data(settings_for(str(tmp_path)), torch.device("cpu"))


def test_cifar10_reads_its_five_batches_and_ten_classes(tmp_path):
    from fake_cifar import write_fake_cifar
    write_fake_cifar(tmp_path, "cifar10", train=500, test=100)
    splits = load_data(settings_for(str(tmp_path), dataset="cifar10"), torch.device("cpu"))
    assert len(splits.train_images) == 400 and len(splits.test_images) == 100
    assert len(splits.classes) == 10 and int(splits.train_labels.max()) < 10

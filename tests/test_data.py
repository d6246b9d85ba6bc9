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


def mean_colours(images):
    return images.float().mean(dim=(2, 3))


def test_each_label_stays_with_its_image_through_loading_the_split_and_shuffling(data_dir, monkeypatch):
    """tests/fake_cifar.py colours each class: an image's mean colour lies within about 1 of its class's
    colour (noise of +-40 averaged over 1,024 pixels) and tens from the other classes'. So the class
    colours measured on the training split must name the label of every image of every split, and of
    every image of every batch an epoch draws."""
    from dendritic_experiment import train
    from dendritic_experiment.train import train_one_epoch

    splits = load_data(settings_for(data_dir, val_split=200), torch.device("cpu"))
    colours = mean_colours(splits.train_images)
    assert set(splits.train_labels.tolist()) == set(range(100))  # every class has a colour measured
    class_colours = torch.stack([colours[splits.train_labels == c].mean(0) for c in range(100)])

    def named_labels(images):
        return torch.cdist(mean_colours(images), class_colours).argmin(1)

    for images, labels in ((splits.train_images, splits.train_labels), (splits.val_images, splits.val_labels),
                           (splits.test_images, splits.test_labels)):
        assert torch.equal(named_labels(images), labels)
    batches = []

    def record_batch(model, images, labels, *args):
        batches.append((images, labels))
        return torch.zeros(()), torch.zeros(len(labels), 100)

    monkeypatch.setattr(train, "training_step", record_batch)
    settings = SimpleNamespace(batch_size=100, augment=True, cutout=8)
    setup = SimpleNamespace(settings=settings)
    train_one_epoch(torch.nn.Identity(), splits.train_images, splits.train_labels, None, setup, None,
                    generator=torch.Generator().manual_seed(3))
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert len(labels) == 800 and not torch.equal(labels, splits.train_labels)  # shuffled, every image once
    assert torch.equal(named_labels(images), labels)


CODED = 4096  # images whose pixels code their own row and column, to read back each augmentation


def position_coded_images():
    """Channel 0 holds 10 + 7 * row, channel 1 10 + 7 * column (never 0, the padding), channel 2 200."""
    rows = torch.arange(32).view(1, 32, 1).expand(CODED, 32, 32)
    cols = torch.arange(32).view(1, 1, 32).expand(CODED, 32, 32)
    return torch.stack([10 + 7 * rows, 10 + 7 * cols, torch.full_like(rows, 200)], 1).to(torch.uint8)


def as_pixels(x):
    """A prepared batch back on the 0-255 scale (prepare_batch normalises with the dataset's mean and std)."""
    mean = torch.tensor(data.DATASETS["cifar100"]["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.DATASETS["cifar100"]["std"]).view(1, 3, 1, 1) * 255
    return (x.float() * std + mean).round()


def test_crops_and_flips_are_drawn_per_image_over_every_offset():
    """Offsets 0 to 8 of the 4-pixel padding on both axes, each about a ninth of the images, and a flip
    for about half, read back from each image's centre pixels."""
    x = prepare_batch(position_coded_images(), augment=True, memory_format=torch.contiguous_format,
                      generator=torch.Generator().manual_seed(0))
    pixels = as_pixels(x)
    top = (pixels[:, 0, 16, 16] - 10) / 7 - 12  # output row 16 shows input row top - 4 + 16
    flipped = pixels[:, 1, 16, 17] < pixels[:, 1, 16, 16]  # columns run backwards in a mirrored crop
    column = (pixels[:, 1, 16, 16] - 10) / 7  # input column left + 12, or left + 11 when mirrored
    left = column - 12 + flipped.float()
    for offsets in (top, left):
        counts = torch.bincount(offsets.long(), minlength=9)
        assert len(counts) == 9 and torch.equal(offsets, offsets.round())
        # binomial: 4096 / 9 = 455 per offset, sd 20
        assert ((counts - CODED / 9).abs() < 80).all(), counts.tolist()
    assert abs(flipped.float().mean().item() - 0.5) < 0.03  # sd 0.008


def test_cutout_blanks_one_square_per_image_around_its_own_centre_clipped_at_all_four_borders():
    blank = (prepare_batch(torch.full((CODED, 3, 32, 32), 200, dtype=torch.uint8), cutout=8,
                           memory_format=torch.contiguous_format, generator=torch.Generator().manual_seed(0)) == 0).all(1)
    rows, cols = blank.any(2), blank.any(1)  # images x 32: the lines the square covers
    first_row, last_row = rows.float().argmax(1), 31 - rows.flip(1).float().argmax(1)
    first_col, last_col = cols.float().argmax(1), 31 - cols.flip(1).float().argmax(1)
    assert rows.any(1).all()  # every image has its square
    # One rectangle, all of it blank: its area is its height times its width.
    assert torch.equal(blank.sum((1, 2)), rows.sum(1) * cols.sum(1))
    assert torch.equal(rows.sum(1), last_row - first_row + 1) and torch.equal(cols.sum(1), last_col - first_col + 1)
    # By hand: a centre c covers lines max(0, c - 4) to min(31, c + 3): 8 of them unless a border clips them.
    centre_y = torch.where(first_row > 0, first_row + 4, last_row - 3)
    centre_x = torch.where(first_col > 0, first_col + 4, last_col - 3)
    assert torch.equal(first_row, (centre_y - 4).clamp(min=0)) and torch.equal(last_row, (centre_y + 3).clamp(max=31))
    assert set(centre_y.tolist()) == set(centre_x.tolist()) == set(range(32))
    assert len(set(zip(centre_y.tolist(), centre_x.tolist()))) > 950  # 4096 draws of 1024 centres: 1005 expected
    clipped = [(first_row == 0) & (rows.sum(1) < 8), (last_row == 31) & (rows.sum(1) < 8),
               (first_col == 0) & (cols.sum(1) < 8), (last_col == 31) & (cols.sum(1) < 8)]
    assert all(border.sum() > 200 for border in clipped)  # 4 centres of 32 clip at each border: 512 expected


def test_each_epoch_draws_its_own_stream_shared_by_a_dendritic_run_and_its_control():
    from dendritic_experiment.continuation import ContinuedRun, DendriticRun
    from dendritic_experiment.runs import BaselineRun

    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    data_ = data.Data(images, torch.zeros(10, dtype=torch.int64), images, None, images, None, [])
    setup = SimpleNamespace(settings=None)

    def order(run, epoch):
        return torch.randperm(1000, generator=run.epoch_generator(epoch))

    dendritic = DendriticRun("resnet18", data_, setup, 1, "unused")
    control = ContinuedRun("resnet18", data_, setup, 1, None, cycles=[2], lrs=[0.1, 0.1])
    assert torch.equal(order(dendritic, 1), order(control, 1)) and torch.equal(order(dendritic, 2), order(control, 2))
    assert not torch.equal(order(dendritic, 1), order(dendritic, 2))  # by epoch
    assert not torch.equal(order(dendritic, 1), order(DendriticRun("resnet18", data_, setup, 2, "unused"), 1))  # by seed
    assert not torch.equal(order(dendritic, 1), order(BaselineRun("resnet18", data_, setup, 1), 1))  # not the baseline's


def test_an_epochs_batches_are_drawn_on_the_cpu_whatever_device_holds_the_images():
    """A dendritic run reused from one device and its control trained on another share their batches:
    the order, crops, flips and cutouts come from the run's CPU stream and are copied to the images'
    device. (No GPU here: PyTorch's meta device stands for it; a draw made there would leave the CPU
    stream where it was, and one drawn there has no values to copy.)"""
    from dendritic_experiment.runs import BaselineRun

    def run_on(device):
        images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8, device=device)
        setup = SimpleNamespace(settings=None)
        return BaselineRun("resnet18", data.Data(images, None, images, None, images, None, []), setup, 1), images

    (on_cpu, cpu_images), (on_meta, meta_images) = run_on("cpu"), run_on("meta")
    assert on_meta.epoch_generator(1).device == torch.device("cpu")
    cpu_stream, meta_stream = on_cpu.epoch_generator(1), on_meta.epoch_generator(1)
    order, draws = data.epoch_draws(cpu_images, 4, 2, augment=True, cutout=8, generator=cpu_stream)
    meta_order, meta_draws = data.epoch_draws(meta_images, 4, 2, augment=True, cutout=8, generator=meta_stream)
    assert meta_order.device.type == "meta" and {value.device.type for value in meta_draws.values()} == {"meta"}
    assert torch.equal(cpu_stream.get_state(), meta_stream.get_state())  # both drew the same numbers on the CPU
    assert sorted(order.tolist()) == list(range(10)) and draws.keys() == meta_draws.keys()
    assert all(len(value) == 8 for value in draws.values())  # two batches of 4

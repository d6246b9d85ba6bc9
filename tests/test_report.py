"""The report on a synthetic table with width variants, against values computed by hand: the width
frontier in summary.md, summary.json and comparison.png, the right panel drawn from the control's
own history, every label inside its axes, and the one-seed bootstrap paired by test image."""
import json
import re

import numpy as np
import pytest
import torch

from dendritic_experiment import comparisons, figures, markdown, report
from dendritic_experiment.utils import write_csv

from helpers import as_planned

SEEDS = (0, 1, 2)
# ResNet-18 at twice the width has four times the parameters: the dendritic run's 20M lie halfway
# between 10M and 40M in log-parameters, so the frontier there is the mean of the two members.
PARAMS = {"resnet18": 10e6, "resnet18_w2": 40e6, "resnet34": 21.3e6, "resnet18_dendritic": 20e6,
          "resnet18_continued": 10e6}
ACCURACY = {
    "resnet18": (70.0, 71.0, 72.0),
    "resnet18_w2": (74.0, 74.0, 77.0),
    "resnet34": (75.0, 75.5, 76.0),
    "resnet18_dendritic": (73.0, 72.0, 75.0),
    "resnet18_continued": (70.2, 71.0, 72.2),  # its mean 0.13 points above resnet18: labels that collide
}
BASELINE_VAL = (60.0, 61.0, 62.0)  # resnet18's validation accuracy by seed: where both cycle curves start
CYCLES = [2, 2]  # the dendritic run's epochs with 1 and 2 dendrites; its control repeats them
VAL_HISTORY = {  # by seed: each epoch's validation accuracy
    "resnet18_dendritic": ([61.0, 63.0, 62.0, 64.0], [62.0, 62.5, 63.0, 63.5], [63.0, 66.0, 65.0, 64.0]),
    "resnet18_continued": ([60.5, 61.5, 62.5, 62.0], [61.0, 61.5, 62.0, 61.0], [64.0, 63.0]),  # seed 2 stopped early
}


def runs(seeds=SEEDS, macs=True):
    table = []
    for seed in seeds:
        for name, accuracies in ACCURACY.items():
            dendritic = name.endswith("_dendritic")
            table.append(dict(name=name, model=name.split("_")[0], dendritic=dendritic, seed=seed,
                              test_accuracy=accuracies[seed], val_accuracy=BASELINE_VAL[seed] + (name != "resnet18"),
                              params=PARAMS[name], dendrites=int(dendritic), epochs=4, start="baseline",
                              cycles=CYCLES if dendritic else None,
                              **(dict(macs=PARAMS[name] * 50) if macs else {})))
    return as_planned(table)


def run_folders(tmp_path, seeds=SEEDS):
    """A history.csv for each dendritic run and its control: {(name, seed): folder}."""
    folders = {}
    for name, by_seed in VAL_HISTORY.items():
        for seed in seeds:
            folder = tmp_path / f"{name}_seed{seed}"
            folder.mkdir()
            write_csv(str(folder / "history.csv"),
                      [dict(epoch=epoch, val_accuracy=value) for epoch, value in enumerate(by_seed[seed], 1)])
            folders[name, seed] = str(folder)
    return folders


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """write_report on the synthetic table; returns (results folder, summary)."""
    results = tmp_path_factory.mktemp("results")
    return results, report.write_report(str(results), runs(), run_folders(results))


def test_the_dendritic_run_against_the_width_frontier_by_hand(written):
    results, summary = written
    entry, control = summary["frontier"]  # the control too: the same extra epochs as the run, no dendrites
    assert (entry["run"], control["run"]) == ("resnet18_dendritic", "resnet18_continued")
    # the control at 10M sits on resnet18's own point: 70.2 - 70, 71 - 71, 72.2 - 72
    assert control["differences"] == pytest.approx([0.2, 0.0, 0.2])
    # each seed's frontier at 20M: (70 + 74) / 2, (71 + 74) / 2, (72 + 77) / 2 = 72, 72.5, 74.5;
    # run - frontier: 1.0, -0.5, 0.5: mean 1/3, sd 0.763763, half width 4.30265 * 0.763763 / sqrt(3) = 1.89729
    assert entry["differences"] == pytest.approx([1.0, -0.5, 0.5])
    assert (entry["difference"], entry["low"], entry["high"]) == pytest.approx((1 / 3, -1.56396, 2.23062), abs=1e-4)
    # drawn from the run's mean over these seeds, at its parameters
    assert (entry["params"], entry["accuracy"]) == (20e6, pytest.approx(220 / 3))
    # power from the noncentral t with 2 degrees of freedom: 3 seeds find 3.264 sd (G*Power's value);
    # 0.5 points is 0.655 sd and 0.3 points 0.393 sd: between the 0.8 sd (15 seeds) and 0.5 sd (34 seeds)
    # reference values, and beyond 0.5 sd's 34
    assert entry["power"]["resolves"] == pytest.approx(3.264 * 0.763763, rel=1e-3)
    assert 15 < entry["power"]["seeds_needed"]["0.5"] < 34 < entry["power"]["seeds_needed"]["0.3"]
    text = (results / "summary.md").read_text()
    assert ("**resnet18_dendritic (20.00M parameters)** is above the resnet18 width frontier by 0.33 points at equal "
            "parameters: 95% interval [-1.56, +2.23] (t interval over 3 seeds") in text
    assert "read the dendritic run's distance beside its control's" in text
    assert text.index("## Dendrites or width") < text.index("## Every run")  # beside the question, before the table
    assert "- **resnet18_dendritic − the width frontier**: per-seed differences have sd 0.76 points" in text
    # its own wider variant is not one of the larger networks the headline asks about: the frontier answers that
    assert [e["against"] for e in summary["headline"]] == ["resnet34"]


def test_without_width_variants_there_is_no_frontier():
    no_variants = [run for run in runs() if run["name"] != "resnet18_w2"]
    assert comparisons.frontiers(no_variants) == [] and comparisons.frontier_entries(no_variants, run_dirs={}) == []
    assert "width frontier" not in markdown.summary_markdown(dict(runs=no_variants))


def test_a_run_outside_the_frontier_is_said_to_be_so_not_extrapolated():
    beyond = [dict(run, params=50e6) if run["name"] == "resnet18_dendritic" else run for run in runs()]
    entry = comparisons.frontier_entries(beyond, run_dirs={})[0]
    assert entry["difference"] is None and entry["seeds"] == [] and entry["power"] is None
    why = "kept 1 dendrite(s): 50,000,000 parameters, beyond the widest member resnet18_w2 (40,000,000)"
    assert entry["outside"] == {0: why, 1: why, 2: why}
    summary = dict(runs=beyond, frontier=[entry], frontiers=[line.as_dict() for line in comparisons.frontiers(beyond)])
    text = markdown.summary_markdown(summary)
    assert f"**resnet18_dendritic** lies outside the resnet18 width frontier in every seed (seed 0 {why}; " in text
    assert ("**The resnet18 width frontier** over seed(s) 0, 1, 2 (mean test accuracy; it never falls as parameters "
            "grow: docs/method.md): resnet18 10.00M 71.00%, resnet18_w2 40.00M 75.00%.") in text
    params_panel = figures.comparison_figure(json.loads(json.dumps(summary))).axes[0]
    assert [line.get_gid() for line in params_panel.get_lines()].count("distance to the frontier") == 0


def test_the_right_panel_is_the_dendritic_run_and_its_control_from_their_histories(written):
    _, summary = written
    curves = {(c["run"], c["seed"]): c["points"] for c in summary["cycles"]}
    # x = 0: the baseline both start from; then the best validation accuracy of each 2-epoch cycle
    assert curves["resnet18_dendritic", 0] == [[0, 60.0], [1, 63.0], [2, 64.0]]
    assert curves["resnet18_continued", 0] == [[0, 60.0], [1, 61.5], [2, 62.5]]
    assert curves["resnet18_continued", 2] == [[0, 62.0], [1, 64.0]]  # it stopped after one cycle
    figure = figures.comparison_figure(summary)
    right = figure.axes[-1]
    drawn = {(line.get_color(), tuple(line.get_ydata())) for line in right.get_lines() if len(line.get_ydata()) > 1}
    assert {ys for colour, ys in drawn if colour == "tab:orange"} == {(60.0, 61.5, 62.5), (61.0, 61.5, 62.0),
                                                                     (62.0, 64.0)}
    assert {ys for colour, ys in drawn if colour == "tab:green"} == {(60.0, 63.0, 64.0), (61.0, 62.5, 63.5),
                                                                    (62.0, 66.0, 65.0)}
    legend = [text.get_text() for text in right.get_legend().get_texts()]
    assert legend == ["resnet18_dendritic, each of 3 seed(s)", "resnet18_continued, each of 3 seed(s)"]


def test_every_panel_places_every_run_and_keeps_its_label_inside(written):
    _, summary = written
    figure = figures.comparison_figure(summary)
    params_panel, macs_panel, _ = figure.axes
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axes in (params_panel, macs_panel):
        labels = [text for text in axes.texts if text.get_gid() == "run label"]
        assert sorted(label.get_text() for label in labels) == sorted(ACCURACY)
        inside = axes.get_window_extent(renderer)
        boxes = [label.get_window_extent(renderer) for label in labels]
        for label, box in zip(labels, boxes):
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, \
                label.get_text()
        # resnet18 and its control lie 0.13 points apart at the same parameters: their labels must not overprint
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    means = {label.get_text(): label.xy for label in params_panel.texts if label.get_gid() == "run label"}
    assert means["resnet18_w2"] == pytest.approx((40.0, 75.0)) and params_panel.get_xscale() == "log"
    assert {label.get_text(): label.xy for label in macs_panel.texts}["resnet34"] == pytest.approx((21.3 * 50, 75.5))
    frontier_line = next(line for line in params_panel.get_lines() if "width frontier" in str(line.get_label()))
    xs, ys = frontier_line.get_data()
    assert (xs[0], ys[0], xs[-1], ys[-1]) == pytest.approx((10.0, 71.0, 40.0, 75.0))
    title = figure._suptitle.get_text()
    assert "the resnet18 width frontier at equal parameters: +0.33 points" in title
    # the control's [0.2, 0.0, 0.2]: mean 0.1333, sd 0.11547, half width 4.303 * 0.11547 / sqrt(3) = 0.28687
    assert "; its control (the same extra epochs, no dendrites): +0.13 points, 95% interval [-0.15, +0.42]" in title
    colours = {label.get_text(): label.get_color() for label in params_panel.texts if label.get_gid() == "run label"}
    assert colours == {"resnet18": "tab:blue", "resnet18_w2": "tab:blue", "resnet34": "tab:blue",
                       "resnet18_dendritic": "tab:green", "resnet18_continued": "tab:orange"}  # each its point's


def test_the_summary_and_the_figure_give_the_same_frontier_numbers(written):
    """Both read from what the report wrote: summary.md's distances are the dotted lines' lengths, and
    each line ends on the frontier drawn, at the run's parameters."""
    results, _ = written
    summary = json.loads((results / "summary.json").read_text())
    text = (results / "summary.md").read_text()
    params_panel = figures.comparison_figure(summary).axes[0]
    dotted = [line.get_data() for line in params_panel.get_lines() if line.get_gid() == "distance to the frontier"]
    frontier_line = next(line for line in params_panel.get_lines() if "width frontier" in str(line.get_label()))
    assert len(dotted) == len(summary["frontier"]) == 2
    for entry, (xs, ys) in zip(summary["frontier"], dotted):
        stated = float(re.search(rf"\*\*{entry['run']} \([\d.]+M parameters\)\*\* is (?:above|below) the resnet18 width "
                                 r"frontier by ([\d.]+) points", text).group(1))
        assert ys[0] - ys[1] == pytest.approx(entry["difference"]) and abs(ys[0] - ys[1]) == pytest.approx(stated, abs=0.005)
        on_line = np.interp(np.log(xs[0]), np.log(frontier_line.get_xdata()), frontier_line.get_ydata())
        assert ys[1] == pytest.approx(on_line, abs=1e-3)


def test_the_report_is_redrawn_from_summary_json_alone(written):
    results, _ = written
    text = (results / "summary.md").read_text()
    (results / "summary.md").unlink()
    report.redraw_report(str(results))
    assert (results / "summary.md").read_text() == text
    assert json.loads((results / "summary.json").read_text())["frontier"][0]["seeds"] == [0, 1, 2]


def predictions(folder, correct, labels=None):
    """test_predictions.pt for a run that got exactly the images `correct` marks right."""
    labels = torch.arange(len(correct)) % 10 if labels is None else labels
    predicted = torch.where(torch.as_tensor(correct), labels, (labels + 1) % 10)
    folder.mkdir()
    torch.save({"predicted": predicted, "labels": labels}, folder / "test_predictions.pt")
    return str(folder)


def test_one_seed_is_paired_by_test_image(tmp_path):
    # 1,000 images; b gets the first 500 right, a the same ones and 20 more: a - b = 2 points exactly.
    # Paired, only the 20 images where they differ vary between resamples: a binomial count with p = 0.02,
    # sd 100 * sqrt(0.02 * 0.98 / 1000) = 0.4427 points, half width about 1.96 * 0.4427 = 0.868.
    # Unpaired, each accuracy varies on its own: 100 * sqrt((0.52 * 0.48 + 0.5 * 0.5) / 1000) = 2.234, half 4.38.
    images = np.arange(1000)
    folders = {("a", 0): predictions(tmp_path / "a", images < 520), ("b", 0): predictions(tmp_path / "b", images < 500)}
    table = [dict(name=name, seed=0, test_accuracy=accuracy) for name, accuracy in (("a", 52.0), ("b", 50.0))]
    entry = comparisons.Accuracies(table, folders).difference("a", "b")
    assert entry["difference"] == pytest.approx(2.0) and entry["power"] is None
    assert (entry["high"] - entry["low"]) / 2 == pytest.approx(0.868, rel=0.15)
    assert entry["method"].startswith("paired bootstrap over 1,000 test images, seed 0 only")
    # The same predictions with b's images in another order: the pairing is gone, the interval widens.
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    b_correct = torch.as_tensor(images < 500)[shuffled]
    folders["b", 0] = predictions(tmp_path / "b_shuffled", b_correct, (torch.arange(1000) % 10)[shuffled])
    unpaired = comparisons.Accuracies(table, folders).difference("a", "b")
    assert unpaired["difference"] == pytest.approx(2.0)
    assert (unpaired["high"] - unpaired["low"]) / 2 == pytest.approx(4.38, rel=0.15)


def test_one_seed_against_the_frontier_is_paired_by_test_image(tmp_path):
    # resnet18 right on the first 700 of 1,000 images, resnet18_w2 on the first 740, the dendritic run
    # on the first 725: the frontier halfway is 72.0, the run 72.5. Per image, run - (a + b) / 2 is
    # +0.5 on 25 images, -0.5 on 15, else 0: sd sqrt(0.01 - 0.005^2), standard error 0.316 points,
    # half width about 1.96 * 0.316 = 0.62.
    images = np.arange(1000)
    folders = {(name, 0): predictions(tmp_path / name, images < right)
               for name, right in (("resnet18", 700), ("resnet18_w2", 740), ("resnet18_dendritic", 725))}
    table = as_planned([dict(name=name, seed=0, params=PARAMS[name], test_accuracy=accuracy)
                        for name, accuracy in (("resnet18", 70.0), ("resnet18_w2", 74.0), ("resnet18_dendritic", 72.5))])
    (entry,) = comparisons.frontier_entries(table, folders)
    assert entry["difference"] == pytest.approx(0.5)
    assert (entry["high"] - entry["low"]) / 2 == pytest.approx(0.62, rel=0.15)
    assert entry["method"].startswith("paired bootstrap over 1,000 test images, seed 0 only")


def test_the_misclassified_picture_shows_the_first_wrong_images_under_their_names():
    images = (torch.arange(5, dtype=torch.uint8) * 50).view(5, 1, 1, 1).expand(5, 3, 32, 32)  # image i: grey 50 i
    labels, predicted = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 2, 2, 0, 1])  # wrong: images 1, 3 and 4
    figure = figures.misclassified_figure(images, labels, predicted, ["a", "b", "c", "d", "e"], count=2, columns=2)
    axes = figure.axes[0]
    assert figure._suptitle.get_text() == "2 of 3 misclassified test images"
    assert [text.get_text() for text in axes.texts] == ["true: b\npredicted: c", "true: d\npredicted: a"]
    # Tiles 32 + 4 wide and 32 + 16 high, each image 16 rows down (its names above it) and 2 columns in.
    mosaic = torch.as_tensor(axes.images[0].get_array())
    assert mosaic.shape == (48, 72, 3) and mosaic.sum() == 255 * 3 * (48 * 72 - 2 * 32 * 32) + 3 * 32 * 32 * (50 + 150)
    assert (mosaic[16:48, 2:34] == 50).all() and (mosaic[16:48, 38:70] == 150).all()
    figures.pyplot().close(figure)


def test_runs_with_their_cpu_latency_get_a_panel_of_accuracy_against_it(written):
    _, summary = written
    latency = {"resnet18": 10.0, "resnet18_w2": 30.0, "resnet34": 20.0, "resnet18_dendritic": 12.5,
               "resnet18_continued": 10.0}
    timed = dict(summary, runs=[dict(run, latency_ms={"1": latency[run["name"]], "32": 8 * latency[run["name"]]})
                                for run in summary["runs"]])
    figure = figures.comparison_figure(timed)
    assert len(figure.axes) == 4  # parameters, MACs, latency, cycles
    labels = {text.get_text(): text.xy for text in figure.axes[2].texts if text.get_gid() == "run label"}
    assert labels["resnet18_dendritic"] == pytest.approx((12.5, 220 / 3))
    table = markdown.summary_markdown(timed)
    assert "| 12.5 / 100.0 | 1.25x |" in next(line for line in table.splitlines() if line.startswith("| resnet18_dendritic |"))
    assert next(line for line in table.splitlines() if line.startswith("| resnet18_w2 |")).endswith("| 30.0 / 240.0 | 3.00x |")

"""What a dendrite gets to learn with, and what it contributes, measured against a hand computation."""
import pytest
import torch

from dendritic_experiment.contribution import contribution
from dendritic_experiment.dendrites import architecture_scores, copy_library_outputs

IMAGES = torch.randn(16, 3, 32, 32)


def with_one_dendrite(new_tracker, *flags):
    """Tiny ResNet-18 with its auto modules converted, then one dendrite added (as a warm start adds it);
    and what the dendrites contributed before it."""
    dendrites = new_tracker("--max-dendrites", "2", *flags)
    new_optimizer(dendrites)
    dendrites.learn_shapes(IMAGES[:2], torch.tensor([1, 2]))
    before = contribution(dendrites.model, IMAGES, 2)
    dendrites.start_from_baseline(50.0, 50.0)
    assert dendrites.dendrite_count == 1
    return dendrites, before


def new_optimizer(dendrites):
    optimizer, _ = dendrites.setup_optimizer(torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4),
                                             torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=lambda epoch: 1.0))
    return optimizer


def test_dendrite_parameters_learn_in_their_own_group(new_tracker):
    dendrites, _ = with_one_dendrite(new_tracker, "--dendrite-lr-multiplier", "10", "--dendrite-weight-decay", "0")
    groups = {group["name"]: group for group in new_optimizer(dendrites).param_groups}
    assert (groups["dendrites"]["lr"], groups["dendrites"]["weight_decay"]) == (pytest.approx(1.0), 0)
    assert (groups["network"]["lr"], groups["network"]["weight_decay"]) == (0.1, 5e-4)
    names = {id(p): name for name, p in dendrites.model.named_parameters()}
    in_dendrite_group = {names[id(p)] for p in groups["dendrites"]["params"]}
    for module in ("layer3.0.conv2", "layer3.1.conv2"):  # each: the output scale, and the conv+bn copy
        assert {f"{module}.dendrites_to_top.0", f"{module}.dendrite_module.layers.0.model.0.weight",
                f"{module}.dendrite_module.layers.0.model.1.weight",
                f"{module}.dendrite_module.layers.0.model.1.bias"} <= in_dendrite_group
    assert len(in_dendrite_group) == 8
    in_network_group = {names[id(p)] for p in groups["network"]["params"]}
    assert "layer3.0.conv2.main_module.model.0.weight" in in_network_group and "fc.weight" in in_network_group
    assert in_network_group | in_dendrite_group == set(names.values())


def test_before_any_dendrite_there_is_one_group_and_no_contribution(new_tracker):
    dendrites = new_tracker()
    assert [group["name"] for group in new_optimizer(dendrites).param_groups] == ["network"]
    assert set(contribution(dendrites.model, IMAGES, 3).values()) == {0.0}


def test_contribution_matches_a_hand_computation(new_tracker):
    dendrites, before = with_one_dendrite(new_tracker, "--dendrite-activation", "sigmoid", "--dendrite-init-scale", "0.01")
    assert set(before.values()) == {0.0}
    model = dendrites.model.train()
    modules = [model.get_submodule(name) for name in ("layer3.0.conv2", "layer3.1.conv2")]
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs.__setitem__(m, args[0])) for m in modules]
    with torch.no_grad():
        for module, scale in zip(modules, (0.5, -2.0)):  # a known output scale for each module's dendrite
            module.dendrites_to_top[-1].fill_(scale)
        reference = model.eval()(IMAGES)
    for hook in hooks:
        hook.remove()

    shares = []
    with torch.no_grad():
        for module, scale in zip(modules, (0.5, -2.0)):
            # The dendrite's term, by hand: its scale times the sigmoid of its conv+bn copy.
            term = scale * torch.sigmoid(module.dendrite_module.layers[0](inputs[module]))
            output = module.main_module(inputs[module]) + term
            shares.append(term.var(dim=(0, 2, 3)).sum() / output.var(dim=(0, 2, 3)).sum())
    model.train()
    figures = contribution(model, IMAGES, 2)
    assert figures["dendrite_scale"] == pytest.approx((0.5 + 2.0) / 2)
    assert figures["dendrite_share"] == pytest.approx(float(sum(shares) / 2), rel=1e-4)
    assert figures["dendrite1_share"] == figures["dendrite_share"] and figures["dendrite2_share"] == 0
    assert model.training  # put back as it was, and the scales with it
    assert torch.equal(model.eval()(IMAGES), reference)


def test_init_scale_and_activation_reach_the_library(new_tracker):
    dendrites, _ = with_one_dendrite(new_tracker, "--dendrite-init-scale", "0.5", "--dendrite-activation", "tanh")
    copy = dendrites.model.get_submodule("layer3.0.conv2").dendrite_module.layers[0].model[0].weight
    assert 0.4 < float(copy.detach().std()) < 0.6  # drawn as 0.5 * N(0, 1)
    module = dendrites.model.get_submodule("layer3.0.conv2")
    with torch.no_grad():
        module.dendrites_to_top[-1].fill_(1.0)
        x = torch.randn(4, module.main_module.model[0].in_channels, 8, 8)
        module.eval()
        expected = module.main_module(x) + torch.tanh(module.dendrite_module.layers[0](x))
        assert torch.allclose(module(x), expected, atol=1e-6)


@pytest.mark.parametrize("cycle, kept", [
    ([49.8, 50.4, 50.8], True),  # a slow climb: its best, 50.8, beats the baseline's 50.0 by more than 0.5
    ([50.3, 50.45, 50.2], False),  # its best is 0.45 above: the library's own rule would keep it
])
def test_a_dendrite_is_kept_only_when_its_cycle_gains_more_than_the_threshold(new_tracker, cycle, kept):
    dendrites, _ = with_one_dendrite(new_tracker, "--dendrite-min-gain", "0.5")  # the baseline scored 50.0
    new_optimizer(dendrites)
    dendrites.learn_shapes(IMAGES[:2], torch.tensor([1, 2]))
    for epoch, score in enumerate(cycle, 1):
        with torch.no_grad():  # tag the model of each epoch, to see which one the tracker keeps
            dendrites.model.fc.bias[0] = epoch
        model, _, complete = dendrites.end_epoch(score, 50.0, epoch, cycle_length=len(cycle))
    tag = float(model.fc.bias[0].detach())
    if kept:  # the cycle's best epoch goes on, and the next dendrite is added (max_dendrites 2)
        assert dendrites.dendrite_count == 2 and not complete and tag == 3
        new_optimizer(dendrites)
        for epoch, score in enumerate([51.2, 50.9], 1):  # 0.4 above the best: not enough
            _, _, complete = dendrites.end_epoch(score, 50.0, epoch, cycle_length=2)
        assert complete and dendrites.dendrite_count == 1
        copy_library_outputs(dendrites.run_dir)  # the library's table of the architectures kept, scores as validation gave them
        assert [score for _, score in architecture_scores(dendrites.run_dir, dendrites.settings)] == pytest.approx([50.0, 50.8])
    else:  # removed, the baseline's model back, and the run ends
        assert dendrites.dendrite_count == 0 and complete and tag not in (1, 2, 3)


def test_a_blocks_dendrite_is_a_copy_of_the_whole_block_added_to_its_output(tiny, tmp_path):
    """As the library authors place them on ResNets: the dendrite copies the whole residual block
    (both convolutions, their BatchNorms and the projection shortcut), and the block's output becomes
    block(x) + scale * act(copy(x)), by hand here."""
    from dendritic_experiment.dendrites import DendriteTracker
    from dendritic_experiment.models import BasicBlock, build_model
    from dendritic_experiment.settings import parse_settings

    settings = parse_settings(["--dendrite-modules", "layer3.0", "--dendrite-init-scale", "0.5", "--max-dendrites", "2"])
    with DendriteTracker(build_model("resnet18", width=settings.width), ["layer3.0"], settings, str(tmp_path / "run"),
                         "cpu") as dendrites:
        new_optimizer(dendrites)
        dendrites.learn_shapes(IMAGES[:2], torch.tensor([1, 2]))
        dendrites.start_from_baseline(50.0, 50.0)
        block = dendrites.model.get_submodule("layer3.0")
        (main,), (copy,) = block.main_module.model, block.dendrite_module.layers[0].model
        assert isinstance(main, BasicBlock) and isinstance(copy, BasicBlock) and copy is not main
        assert {name for name, _ in copy.named_parameters()} == {name for name, _ in main.named_parameters()}
        assert "shortcut.0.weight" in dict(copy.named_parameters())
        assert 0.4 < float(copy.conv2[0].weight.detach().std()) < 0.6  # drawn anew as 0.5 * N(0, 1)
        with torch.no_grad():
            scale = torch.linspace(-1, 1, block.dendrites_to_top[-1].shape[1])
            block.dendrites_to_top[-1][0].copy_(scale)
            x = torch.randn(4, 16, 8, 8)
            block.eval()
            expected = main(x) + scale.view(1, -1, 1, 1) * torch.tanh(copy(x))
            assert torch.allclose(block(x), expected, atol=1e-6)

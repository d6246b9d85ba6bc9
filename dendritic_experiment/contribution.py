"""What dendrites add to the layers that hold them, measured on a model (docs/method.md, "Do the dendrites
contribute?"): no library state, only the modules' own tensors and forward passes."""
import torch


@torch.no_grad()
def contribution(model, images, max_dendrites):
    """How much the dendrites add to the outputs of the modules that hold them, on images (a fixed batch, in eval
    mode): {'dendrite_scale': mean |dendrites_to_top| in use, 'dendrite_share': the share of the modules' output
    variance (variance_share) that the dendrites' term carries, averaged over the modules, then the same for each
    dendrite k ('dendrite<k>_scale', 'dendrite<k>_share'), k up to max_dendrites; 0 where none}. A dendrite's term is
    a module's output less its output, on the same input, with that dendrite's scale at zero: no library internal
    beyond dendrites_to_top (and dendrite_modules_added, which modules hold dendrites) is needed."""
    figures = {"dendrite_scale": 0.0, "dendrite_share": 0.0}
    for k in range(1, max_dendrites + 1):
        figures.update({f"dendrite{k}_scale": 0.0, f"dendrite{k}_share": 0.0})
    modules = [m for m in model.modules() if getattr(m, "dendrite_modules_added", 0) > 0]
    if not modules:
        return figures
    scales = [module.dendrites_to_top[-1] for module in modules]  # dendrites x channels, the one in use
    kept = [scale.detach().clone() for scale in scales]
    inputs = {}
    hooks = [module.register_forward_pre_hook(lambda m, args: inputs.__setitem__(m, args[0])) for module in modules]
    was_training = model.training
    model.eval()
    try:
        model(images)
        outputs = [module(inputs[module]).float() for module in modules]

        def share_without(dendrites):
            shares = []
            for module, output, scale, value in zip(modules, outputs, scales, kept):
                scale[dendrites] = 0
                shares.append(variance_share(output, output - module(inputs[module]).float()))
                scale.copy_(value)
            return float(torch.stack(shares).mean())

        count = len(kept[0])
        figures["dendrite_scale"] = float(torch.cat([value.abs().flatten() for value in kept]).mean())
        figures["dendrite_share"] = share_without(list(range(count)))
        for k in range(count):
            figures[f"dendrite{k + 1}_scale"] = float(torch.stack([value[k].abs().mean() for value in kept]).mean())
            figures[f"dendrite{k + 1}_share"] = share_without([k]) if count > 1 else figures["dendrite_share"]
    finally:
        for scale, value in zip(scales, kept):
            scale.copy_(value)
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return figures


def variance_share(output, term):
    """sum_c Var(term)_c / sum_c Var(output)_c, variances over images and positions (channels: dim 1): a
    constant shift per channel is a bias, not a contribution."""
    dims = [d for d in range(output.dim()) if d != 1]
    return term.var(dim=dims).sum() / output.var(dim=dims).sum()

"""A run's identity: what a finished result belongs to, so that it is reused only for the same thing (docs/method.md,
"When results are reused"). Everything a result depends on is listed here, as data: its settings (result_settings)
and its identity (run_identity), both in its result.json and compared in one place, what_changed. The precision a
run trained in is compared where `precision = auto` is resolved (experiment.Experiment.cached).
"""
import ast
import functools
import hashlib
import importlib.metadata
import os
import subprocess

from dendritic_experiment.dendrites import GRADIENT_DESCENT

# Bumped when what is recorded or compared changes. 1: before identities; 2: one acceptance rule, 8 x 8 cutout;
# 3: code and trained precision compared, and the control replays the dendritic run's learning rates (it needs
# the dendritic result's "lrs"); 4: batches drawn on the CPU whatever the device, RESULT_FUNCTIONS compared.
RESULT_FORMAT = 4
NO_IDENTITY = "its result.json predates result identities (format 1)"
PACKAGE = os.path.dirname(os.path.abspath(__file__))

# The settings a run's result depends on; result_settings adds the seed, the model and the precision as set (auto too).
DATA_SETTINGS = ("dataset", "val_split", "augment", "cutout", "smoke")
TRAINING_SETTINGS = ("width", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "label_smoothing",
                     "warmup_epochs")
DENDRITE_SETTINGS = ("dendrite_modules", "max_dendrites", "switch_mode", "dendrite_epochs", "history_epochs",
                     "dendrite_lr", "dendrite_lr_multiplier", "dendrite_weight_decay", "dendrite_init_scale",
                     "dendrite_activation", "dendrite_min_gain", "warm_start", "dendrite_warmup_epochs")
# Every other setting, and why it cannot change a result (a test checks that each is in exactly one list).
NOT_RESULT_SETTINGS = {
    "data_dir": "where the data is read from: its contents are the data fingerprint",
    "experiments": "which runs; each run's own identity says what it is",
    "results_dir": "where results go", "run_name": "where results go",
    "retrain": "trains again, whatever is cached", "plot_only": "trains nothing", "overfit_batch": "trains nothing",
    "wandb_project": "where progress is logged",
    "seeds": "which seeds; each run's identity has its own seed",
    "checkpoint_seconds": "how often a run saves its progress (a resumed run ends as an uninterrupted one)",
    "control": "whether the control is trained, not what it is",
    "device": "where a run trains, recorded in its result.json (numbers differ only by float rounding)",
    "parallel_runs": "how many runs train at once", "ray_address": "where Ray runs", "gpus_per_run": "where a run trains",
    "compile": "the same computation, compiled", "channels_last": "the same computation, another memory layout",
}
# The modules whose code can change a number of each kind of run: their fingerprints are part of its
# identity. Every other module is in NOT_RESULT_MODULES with the reason it cannot, or, where a kind of run
# imports a module of another kind's list, in NOT_RESULT_FOR (tests/test_identity.py checks both).
BASELINE_MODULES = ("data", "models", "train", "runs")
RESULT_MODULES = {
    "baseline": BASELINE_MODULES,
    "control": BASELINE_MODULES + ("continuation", "keep_rule"),
    "dendritic": BASELINE_MODULES + ("continuation", "keep_rule", "dendrites", "contribution"),
}
# Functions of modules otherwise listed below whose code can change a run's numbers: fingerprinted alone.
RESULT_FUNCTIONS = {
    "baseline": ("experiment.Experiment.new_run",),
    "control": ("experiment.Experiment.new_run", "experiment.Experiment.starting_weights"),
    "dendritic": ("experiment.Experiment.new_run", "experiment.Experiment.starting_weights", "utils.split_list"),
}
NOT_RESULT_FOR = {
    "baseline": {"keep_rule": "imported with dendrites.py; a baseline keeps its last epoch, no cycle",
                 "dendrites": "train.py places a model with its to_device: where tensors live, not what they hold"},
    "control": {"dendrites": "imported by continuation.py for the dendritic run; the control calls none of it",
                  "contribution": "measures dendrites, which the control has none of"},
}
NOT_RESULT_MODULES = {
    "__init__": "the package's description", "__main__": "python -m: calls main.py",
    "config": "the settings' defaults: a result compares the settings themselves",
    "settings": "flags into settings: a result compares the settings (result_settings) and the precision it resolves",
    "identity": "what is compared: a change to what it records trains again through the comparison itself",
    "experiment": "which runs, where, reused or trained (new_run and starting_weights: RESULT_FUNCTIONS)",
    "checkpoint": "saves and resumes a run in progress: a resumed run ends as an uninterrupted one (tests/test_resume.py)",
    "utils": "errors, locks and whole-file writes of the values it is given (split_list: RESULT_FUNCTIONS)",
    "cluster": "where runs train (Ray)", "tracking": "logs finished runs to wandb",
    "report": "the report, made anew from the results every time", "intervals": "the report's intervals",
    "comparisons": "the report's numbers", "markdown": "the report's words", "figures": "the pictures, drawn after a run",
    "frontier": "the report's width frontier", "costs": "the report's MACs per image, counted from a finished run's model",
    "main": "the command line", "predict": "a separate tool: predictions of a finished run",
    "export": "a separate tool: a finished run's model as a torch.export program",
    "plain_model": "a finished run's model rebuilt in plain PyTorch, after training",
    "latency": "the report's inference times, measured from finished runs' models",
}


def result_settings(settings, model, kind, seed):
    """The settings a run's result depends on (the rest of its identity: run_identity)."""
    names = DATA_SETTINGS + TRAINING_SETTINGS + (DENDRITE_SETTINGS if kind != "baseline" else ())
    return dict({name: getattr(settings, name) for name in names}, seed=seed, model=model, precision=settings.precision)


def run_identity(run, data, upstream_results):
    """The identity of run (experiment.PlannedRun) trained on data (a fingerprint of the files read, not
    their path) from the finished runs it starts from ({PlannedRun: result})."""
    libraries = {"torch": ".".join(importlib.metadata.version("torch").split(".")[:2])}
    if run.kind == "dendritic":  # the dendrite method: the run stops if the library runs anything else
        libraries.update(perforatedai=importlib.metadata.version("perforatedai"), method=GRADIENT_DESCENT)
    # When each run it starts from finished: a baseline trained again is another start.
    starts_from = {upstream.kind: upstream_results[upstream]["finished_at"] for upstream in run.starts_from}
    return {"format": RESULT_FORMAT, "data": data, "code": code_fingerprint(run.kind), "libraries": libraries,
            "starts_from": starts_from}


def code_fingerprint(kind):
    """{module or module.function: fingerprint} of the code that can change a number of this kind of run."""
    fingerprints = {}
    for name in RESULT_MODULES[kind] + RESULT_FUNCTIONS[kind]:
        module, _, function = name.partition(".")
        path = os.path.join(PACKAGE, module + ".py")
        status = os.stat(path)
        fingerprints[name] = module_fingerprint(path, status.st_mtime_ns, status.st_size, function)
    return fingerprints


@functools.lru_cache(maxsize=None)
def module_fingerprint(path, mtime_ns, size, function=""):
    """The first 16 hex digits of a sha256 of the module's syntax tree (or of one function's, such as
    'Experiment.new_run') without its docstrings: comments, docstrings and formatting do not change
    it, any other change does. Once per version of the file (mtime_ns, size) and process."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:]
    for name in function.split(".") if function else ():
        tree = next((node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))
                     and node.name == name), None)
        if tree is None:  # renamed or moved: RESULT_FUNCTIONS must name it anew
            raise LookupError(f"identity.RESULT_FUNCTIONS names {function} in {path}, which has no such function")
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def git_commit():
    """result.json's code_commit, for provenance only (never compared): ' + local changes' when tracked
    files differ from it; None outside a git checkout or without git."""
    def git(*args):
        return subprocess.run(["git", "-C", PACKAGE, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" + local changes" if changed else "")


def what_changed(cached, settings, identity):
    """Why a cached result.json does not belong to these settings and identity, in a few words, or None."""
    old = cached.get("identity")
    if old is None:
        return NO_IDENTITY
    if old.get("format") != identity["format"]:
        return f"the result format changed ({old.get('format')} -> {identity['format']}: a change of behaviour)"
    if old.get("data") != identity["data"]:
        return f"the data changed (fingerprint {old.get('data')} -> {identity['data']})"
    if code := [name if "." in name else f"{name}.py" for name, _, _ in differences(old.get("code") or {}, identity["code"])]:
        return f"the code changed ({', '.join(code)})"
    changes = [f"{name} {old_value!r} -> {new_value!r}" for name, old_value, new_value in differences(
        dict(cached.get("settings") or {}, **old.get("libraries", {})), dict(settings, **identity["libraries"]))]
    if changes:
        return "changed: " + ", ".join(changes)
    if moved := [kind for kind, _, _ in differences(old.get("starts_from") or {}, identity["starts_from"])]:
        runs = "run" if len(moved) == 1 else "runs"  # a control may repeat another dendritic run than before
        return f"the {' and '.join(moved)} {runs} it starts from changed (trained again, or another run)"
    return None


def differences(old, new):
    return [(name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]

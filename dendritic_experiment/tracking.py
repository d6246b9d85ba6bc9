"""Weights & Biases, with --wandb-project: one wandb run per invocation of main.py (a sweep trial is one), holding
every training run of the experiment; what it logs: README.md, "Experiment tracking". A run's epochs are logged from
its history.csv once it has finished, in this process, so that runs trained by Ray workers are logged as those trained
here. Nothing imports wandb unless --wandb-project is set.
"""
import os

from dendritic_experiment.utils import ExperimentError, read_csv

SWEEP_METRIC = "sweep/dendritic_val_gain"  # what sweep.yaml maximises: see sweep_metrics
DENDRITIC_VAL = "sweep/dendritic_val_accuracy"  # logged beside it


def sweep_trial(settings):
    """The trial's folder under results_dir when main.py runs as a wandb sweep trial (a sweep agent sets
    WANDB_SWEEP_ID and WANDB_RUN_ID, and wandb.init joins that run), else None. The trial's own runs go
    there; the baselines, which every trial shares, stay in results_dir."""
    sweep, trial = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return os.path.join("sweeps", sweep, trial) if settings.wandb_project and sweep and trial else None


def check_sweep_trial(plan):
    """A sweep trial maximises its dendritic run's gain over its control: the plan must have both."""
    dendritic = next((run for run in plan if run.kind == "dendritic"), None)
    if dendritic is None or not any(run.cycles_from and run.cycles_from.name == dendritic.name for run in plan):
        raise ExperimentError("a wandb sweep trial maximises the dendritic run's validation gain over its control: "
                              "list a <model>_dendritic run in --experiments and leave --warm-start and --control on")


def sweep_metrics(runs):
    """{SWEEP_METRIC: the first dendritic run's validation accuracy less its control's, DENDRITIC_VAL: its own}, means
    over seeds, from summary.json's runs; {} without a dendritic run. The gain is maximised, not the accuracy: more and
    longer cycles give the control the same extra training and selection, so only what the dendrites add is left."""
    dendritic = next((run for run in runs if run["kind"] == "dendritic"), None)
    if dendritic is None:
        return {}
    own = {run["seed"]: run["val_accuracy"] for run in runs if run["name"] == dendritic["name"]}
    control = {run["seed"]: run["val_accuracy"] for run in runs if run["kind"] == "control"
               and run["repeats"] == dendritic["name"] and run["family"] == dendritic["family"]}
    metrics = {DENDRITIC_VAL: sum(own.values()) / len(own)}
    if control.keys() == own.keys():
        metrics[SWEEP_METRIC] = sum(own[seed] - control[seed] for seed in own) / len(own)
    return metrics


class Tracking:
    """The invocation's wandb run: each finished run's epochs and figures, then the verdict."""

    def __init__(self, settings):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=settings.wandb_project, config=vars(settings), allow_val_change=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        self.run.finish(exit_code=1 if exc_type else 0)

    def run_finished(self, run, result, trained):
        """A run of the plan is done (trained, or reused from the cache): its epochs and growth
        events when it trained here or on a worker, and its final figures either way."""
        prefix = f"{run.name}/seed{run.seed}"
        if trained:
            self.run.define_metric(f"{prefix}/epoch")
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/epoch")
            history = read_csv(os.path.join(run.folder, "history.csv"))
            for row in history:
                self.run.log({f"{prefix}/{key}": float(value) for key, value in row.items() if value != ""})
            for epoch, event, dendrites, params in growth_events(history, result):
                self.run.log({f"{prefix}/epoch": epoch, f"{prefix}/{event}": dendrites,
                              f"{prefix}/params_after_growth": params})
        figures = ("test_accuracy", "val_accuracy", "params", "dendrites", "epochs", "epochs_trained", "seconds")
        self.run.summary.update({f"{prefix}/{key}": result[key] for key in figures if key in result})
        self.run.summary[f"{prefix}/reused"] = not trained

    def experiment_finished(self, summary, report_dir, run_dirs):
        """The verdict (summary.json's headline and comparisons) in the run's summary, the number a
        sweep maximises, and the report's pictures."""
        for section, prefix in (("headline", "headline"), ("comparisons", "comparison")):
            for entry in summary[section]:
                key = f"{prefix}/{entry['run']} - {entry['against']}"
                self.run.summary.update({f"{key}/{name}": entry[name] for name in ("difference", "low", "high")})
                gap_closed = entry.get("gap_closed") or {}  # a headline's only
                self.run.summary.update({f"{key}/gap_closed/{name}": value for name, value in gap_closed.items()})
        self.run.summary.update(sweep_metrics(summary["runs"]))
        pictures = {"pictures/comparison": os.path.join(report_dir, "comparison.png")}
        pictures.update({f"pictures/{name}/seed{seed}/curves": os.path.join(folder, "curves.png")
                         for (name, seed), folder in run_dirs.items()})
        self.run.log({key: self.wandb.Image(path) for key, path in pictures.items() if os.path.exists(path)})


def growth_events(history, result):
    """[(epoch, 'dendrite_added' or 'dendrite_removed', dendrites after it, parameters after it)] of a run's
    history: a count that rises is a dendrite added at that epoch (before it trained); a run that ends with
    fewer dendrites than it last had removed one."""
    if not history or "dendrites" not in history[0]:
        return []
    events, previous = [], 0
    for row in history:
        count = int(row["dendrites"])
        if count > previous:
            events.append((int(row["epoch"]), "dendrite_added", count, int(row["params"])))
        previous = count
    if result["dendrites"] < previous:
        events.append((int(history[-1]["epoch"]), "dendrite_removed", result["dendrites"], result["params"]))
    return events

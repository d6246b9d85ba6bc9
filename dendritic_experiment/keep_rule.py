"""The one rule by which a dendritic run and its control keep a dendrite cycle (docs/method.md, "The keep rule").
perforatedai's tracker decides the same for a dendritic run only because the two share the scores (score(), shifted
by score_offset()) and its "new best" is the rule's `>` (its improvement thresholds at 0: dendrites.configure);
end_cycle raises LibraryDisagrees should their decisions ever differ."""


class LibraryDisagrees(RuntimeError):
    """perforatedai kept or removed a dendrite against the keep rule: a library change, or a bug here."""


def score_offset(settings):
    """The shift that keeps every score at 1 or more: perforatedai reads a best score of exactly 0 as "no
    best yet" and counts any score as a new best, so a baseline that scored 0.0 (or an epoch whose
    handicapped score came out exactly 0) would be beaten by anything."""
    return 1 + settings.max_dendrites * settings.dendrite_min_gain


def score(val_accuracy, dendrites, settings):
    """What the rule (and perforatedai's tracker) compares: validation accuracy in points, less dendrite_min_gain
    per dendrite in the model (a control counts the dendritic run's: one per cycle), shifted above 0. Within a cycle
    the handicap is a constant, so its best epoch is still the one kept, and the k-th dendrite is kept exactly when
    its cycle's best beats the best so far by more than dendrite_min_gain. A threshold at every epoch (the library's
    improvement_threshold) would never count a cycle that climbs slowly."""
    return val_accuracy - dendrites * settings.dendrite_min_gain + score_offset(settings)


def val_accuracy_of(score_value, dendrites, settings):
    """score() undone: the validation accuracy a score came from."""
    return score_value + dendrites * settings.dendrite_min_gain - score_offset(settings)


class KeepRule:
    """Which cycles a run keeps, and which epoch's model it reports. A cycle is kept when its best score
    beats the best kept so far, and its best epoch (the first with that score) is then the model kept;
    otherwise the run goes back to the model it kept and stops. The start (a finished baseline, epoch 0)
    counts as kept; without one, the first cycle (a neuron-only phase from scratch) is kept."""

    def __init__(self, settings, start_val_accuracy=None):
        self.settings = settings
        self.kept = None if start_val_accuracy is None else {"score": score(start_val_accuracy, 0, settings), "epoch": 0}
        self.cycle_best = None

    def add(self, epoch, val_accuracy, dendrites):
        """An epoch's validation accuracy, with the dendrites of its model; returns whether it is
        its cycle's best so far (its model is then the one kept if the cycle is)."""
        epoch_score = score(val_accuracy, dendrites, self.settings)
        if self.cycle_best is None or epoch_score > self.cycle_best["score"]:
            self.cycle_best = {"score": epoch_score, "epoch": epoch}
            return True
        return False

    def end_cycle(self, library_kept=None):
        """The cycle ends; returns whether it is kept. library_kept: whether perforatedai kept the dendrite
        in a dendritic run (it removes one whose cycle set no new best of the run; None for a control),
        checked so that no reported epoch or dendrite count rests on the library or the rule alone."""
        kept = self.kept is None or self.cycle_best["score"] > self.kept["score"]
        if library_kept is not None and library_kept != kept:
            raise LibraryDisagrees(
                f"perforatedai {'kept' if library_kept else 'removed'} the dendrite of the cycle that ended at epoch "
                f"{self.cycle_best['epoch']}, but the keep rule {'keeps' if kept else 'removes'} it (its best score "
                f"{self.cycle_best['score']} against {self.kept and self.kept['score']}): keep_rule.py's docstring "
                "says what the two must share")
        if kept:
            self.kept = self.cycle_best
        self.cycle_best = None
        return kept

    @property
    def kept_epoch(self):
        """The epoch whose model the run reports (0: the start's)."""
        return self.kept["epoch"] if self.kept else 0

    def state_dict(self):
        return {"kept": self.kept, "cycle_best": self.cycle_best}

    def load_state_dict(self, state):
        self.kept, self.cycle_best = state["kept"], state["cycle_best"]

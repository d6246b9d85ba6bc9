"""What a finished result belongs to, so that it is reused only for the same thing: a run's identity.

A run's result.json holds its "settings" (settings.result_settings) and its "identity":

    format       RESULT_FORMAT: bumped with every change of behaviour that changes results
    data         a fingerprint of the data files read (data.data_fingerprint), not their path
    libraries    torch (major.minor); for a dendritic run also perforatedai and the dendrite method
                 the library runs, read from its own flag (dendrites.dendrite_method)
    starts_from  when each run it starts from finished: a baseline trained again is another start

A finished run is reused only when both match; otherwise it trains again, and so does every run
that starts from it, and the output says which part changed (what_changed).
"""
import importlib.metadata

RESULT_FORMAT = 3  # 1: results before identities; 2: one acceptance rule, shared batches, 8 x 8 cutout;
# 3: the control replays the dendritic run's learning rates (and needs its "lrs")
NO_IDENTITY = "its result.json predates result identities (format 1)"


def run_identity(run, data, upstream_results):
    """The identity of run (experiment.PlannedRun) trained on data (a fingerprint) from the finished
    runs it starts from ({PlannedRun: result})."""
    libraries = {"torch": ".".join(importlib.metadata.version("torch").split(".")[:2])}
    if run.kind == "dendritic":
        from dendritic_experiment.dendrites import dendrite_method

        libraries.update(perforatedai=importlib.metadata.version("perforatedai"), method=dendrite_method())
    starts_from = {upstream.kind: upstream_results[upstream]["finished_at"] for upstream in run.starts_from}
    return {"format": RESULT_FORMAT, "data": data, "libraries": libraries, "starts_from": starts_from}


def what_changed(cached, settings, identity):
    """Why a cached result.json does not belong to these settings and this identity, in a few words;
    None when it does."""
    old = cached.get("identity")
    if old is None:
        return NO_IDENTITY
    if old.get("format") != identity["format"]:
        return f"the result format changed ({old.get('format')} -> {identity['format']}: a change of behaviour)"
    if old.get("data") != identity["data"]:
        return f"the data changed (fingerprint {old.get('data')} -> {identity['data']})"
    changes = [f"{name} {old_value!r} -> {new_value!r}" for name, old_value, new_value in differences(
        dict(cached.get("settings") or {}, **old.get("libraries", {})), dict(settings, **identity["libraries"]))]
    if changes:
        return "changed: " + ", ".join(changes)
    if old.get("starts_from") != identity["starts_from"]:
        return f"a run it starts from ({', '.join(identity['starts_from'])}) was trained again"
    return None


def differences(old, new):
    return [(name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
